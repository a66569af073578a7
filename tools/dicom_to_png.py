#!/usr/bin/env python3
"""Mammography DICOM -> 8-bit grey PNG for mama.h's loader.

    python3 tools/dicom_to_png.py image.dcm out.png
    python3 tools/dicom_to_png.py DICOM_DIR -o PNG_DIR        (tree mirrored, .dcm -> .png)

Per image (needs numpy and pydicom; compressed transfer syntaxes need pydicom's optional
decoders, e.g. `pip install pylibjpeg pylibjpeg-libjpeg` for JPEG-lossless):
  1. intensity, by default as the reference's own preprocessing (SPEC A.5 step 1): the
     stored pixel values x (no Rescale Slope / Intercept, no VOI window, no minimum shift),
     MONOCHROME1 (or Presentation LUT Shape INVERSE) inverted first as max(x) - x, then
     x * 255 / max(x) (an all-zero image stays zero; negative stored values become 0).
     Options instead of the per-image maximum (the same as mama's --bit-depth / --window):
       --bit-depth N   x * 255 / (2^N - 1), x clipped to 0..2^N-1; MONOCHROME1 is inverted
                       as (2^N - 1) - x;
       --window C,W    DICOM's LINEAR window (PS3.3 C.11.2.1.2) with centre C and width W
                       (>= 1) on the stored values, to 0..255; MONOCHROME1 inverted after it
                       (255 - y), as DICOM applies the VOI before the presentation;
       --voi           the file's own display transform: the Modality LUT, then its VOI LUT
                       Sequence (output scaled by the LUT's own range) or Window Center / Width
                       with VOI LUT Function LINEAR (default), LINEAR_EXACT or SIGMOID
                       (--voi-index N picks which when there are several), else the image's
                       min..max; MONOCHROME1 inverted after;
  2. the long side is resized to --size (default 1024; 0 keeps the size): area averaging
     when shrinking, bilinear (half-pixel centres) when growing, on the float image;
  3. rounded half up to 8 bits, floor(y + 0.5) on the 0..255 scale, and written as a grey
     PNG (zlib, no other dependency).  With --size 0 the default gives exactly
     floor(x * 255 / max(x) + 1/2), mama.h's reading of a 16-bit PNG.
A multi-frame file contributes its first frame.
"""
import argparse
import math
import os
import struct
import sys
import zlib

import numpy as np


# --------------------------------------------------------------------------------------
# VOI
# --------------------------------------------------------------------------------------

def _multi(v, index):
    """Window centre/width may be multi-valued: pick `index` (clamped)."""
    try:
        seq = list(v)
    except TypeError:
        return float(v)
    return float(seq[min(index, len(seq) - 1)])


def window(x, c, w, func="LINEAR"):
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1]."""
    func = (func or "LINEAR").upper()
    if func == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if func == "LINEAR_EXACT":
        if w <= 0:
            raise ValueError("window width must be > 0 for LINEAR_EXACT")
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if w < 1:
        raise ValueError("window width must be >= 1 for LINEAR")
    if w == 1:
        return (x > c - 0.5).astype(np.float64)
    y = (x - (c - 0.5)) / (w - 1) + 0.5
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, y)
    y = np.where(x > c - 0.5 + (w - 1) / 2, 1.0, y)
    return np.clip(y, 0.0, 1.0)


def to_unit(ds, window_index=0, voi=True):
    """The displayed image as float64 in [0, 1] (steps 1-3)."""
    from pydicom.pixels import apply_modality_lut, apply_voi
    arr = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if arr.ndim == 3:                       # colour: ITU-R 601 luma
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    x = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if voi and "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        idx = min(window_index, len(ds.VOILUTSequence) - 1)
        item = ds.VOILUTSequence[idx]
        lut = item.LUTData
        lut = [lut] if isinstance(lut, (int, float)) else list(lut)
        lo, hi = float(min(lut)), float(max(lut))
        # the LUT indexes the Modality LUT output; its values are scaled by the LUT's range
        y = np.asarray(apply_voi(x, ds, idx), dtype=np.float64)
        y = (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)
    elif voi and "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = _multi(ds.WindowCenter, window_index), _multi(ds.WindowWidth, window_index)
        y = window(x, c, w, getattr(ds, "VOILUTFunction", "LINEAR"))
    else:
        lo, hi = float(x.min()), float(x.max())
        y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1" or \
            str(getattr(ds, "PresentationLUTShape", "")).upper() == "INVERSE":
        y = 1.0 - y
    return np.clip(y, 0.0, 1.0)


def stored_grey(ds):
    """The stored pixel values as float64 (first frame; colour becomes ITU-R 601 luma)."""
    arr = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.asarray(arr, dtype=np.float64)


def inverted(ds):
    return str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1" or \
        str(getattr(ds, "PresentationLUTShape", "")).upper() == "INVERSE"


def scale_max(x, invert=False):
    """SPEC A.5 step 1: MONOCHROME1 inverted first (max(x) - x), then x * 255 / max(x)."""
    x = np.maximum(x, 0.0)
    if invert:
        x = x.max() - x if x.size else x
    m = float(x.max()) if x.size else 0.0
    return x * 255.0 / m if m > 0 else np.zeros_like(x)


def scale_bits(x, bits, invert=False):
    """x * 255 / (2^bits - 1), x clipped to 0..2^bits-1; MONOCHROME1 as (2^bits - 1) - x."""
    d = float((1 << bits) - 1)
    x = np.clip(x, 0.0, d)
    if invert:
        x = d - x
    return x * 255.0 / d


def to_grey(ds, bit_depth=0, win=None, voi=False, voi_index=0):
    """The image on the 0..255 scale, float64 (step 1)."""
    if voi:
        return to_unit(ds, voi_index, True) * 255.0
    x = stored_grey(ds)
    if win is not None:
        y = window(x, win[0], win[1], "LINEAR") * 255.0
        return 255.0 - y if inverted(ds) else y
    if bit_depth:
        return scale_bits(x, bit_depth, inverted(ds))
    return scale_max(x, inverted(ds))


# --------------------------------------------------------------------------------------
# resizing (separable, as matrices: out = Wy @ img @ Wx^T)
# --------------------------------------------------------------------------------------

def area_weights(n_in, n_out):
    """Each output cell averages the input interval it covers (fractional at the borders):
    OpenCV's INTER_AREA / PIL's BOX when shrinking."""
    s = n_in / n_out
    W = np.zeros((n_out, n_in))
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        j0, j1 = int(math.floor(a)), min(int(math.ceil(b)), n_in)
        for j in range(j0, j1):
            W[i, j] = min(b, j + 1) - max(a, j)
        W[i] /= W[i].sum()
    return W


def bilinear_weights(n_in, n_out):
    """Half-pixel centres (align_corners=False), edges clamped: for growing an axis."""
    W = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        j0 = int(math.floor(src))
        f = src - j0
        W[i, j0] += 1 - f
        if f > 0:
            W[i, min(j0 + 1, n_in - 1)] += f
    return W


def resize(img, h, w):
    H, Wd = img.shape
    wy = area_weights(H, h) if h <= H else bilinear_weights(H, h)
    wx = area_weights(Wd, w) if w <= Wd else bilinear_weights(Wd, w)
    return wy @ img @ wx.T


def target_size(h, w, long_side):
    if not long_side:
        return h, w
    if h >= w:
        return long_side, max(1, int(round(w * long_side / h)))
    return max(1, int(round(h * long_side / w))), long_side


# --------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------

def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(grey):
    """8-bit grey image [h, w] -> PNG file bytes (filter 0 on every row)."""
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    h, w = grey.shape
    raw = b"".join(b"\x00" + grey[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def read_png_grey(path):
    """Reader for what png_bytes writes (8-bit grey, filter 0 or any standard filter)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype == 0, "only 8-bit grey"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), dtype=np.uint8)
    prev = np.zeros(w, dtype=np.int32)
    for y in range(h):
        ft, row = raw[y * (w + 1)], np.frombuffer(raw[y * (w + 1) + 1:(y + 1) * (w + 1)], dtype=np.uint8).astype(np.int32)
        if ft == 0:
            out[y] = row
            prev = row
            continue
        cur = np.zeros(w, dtype=np.int32)
        for x in range(w):
            a = cur[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if ft == 0:
                p = 0
            elif ft == 1:
                p = a
            elif ft == 2:
                p = b
            elif ft == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (row[x] + p) & 255
        out[y] = cur
        prev = cur
    return out


# --------------------------------------------------------------------------------------

def convert_file(src, dst, size=1024, bit_depth=0, win=None, voi=False, voi_index=0):
    import pydicom
    ds = pydicom.dcmread(src)
    y = to_grey(ds, bit_depth, win, voi, voi_index)
    h, w = target_size(y.shape[0], y.shape[1], size)
    if (h, w) != y.shape:
        y = resize(y, h, w)
    grey = np.floor(np.clip(y, 0, 255) + 0.5).astype(np.uint8)
    d = os.path.dirname(os.path.abspath(dst))
    os.makedirs(d, exist_ok=True)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png_bytes(grey))
    os.replace(tmp, dst)
    return grey


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("input", help="a DICOM file or a directory tree of them")
    ap.add_argument("output", nargs="?", help="output PNG (for one file)")
    ap.add_argument("-o", "--out-dir", help="output directory (for a directory input)")
    ap.add_argument("--size", type=int, default=1024, help="long side in pixels (0 = keep; default 1024)")
    ap.add_argument("--bit-depth", type=int, default=0, metavar="N",
                    help="x * 255 / (2^N - 1), N 1..16, instead of the image's maximum")
    ap.add_argument("--window", metavar="C,W", help="DICOM linear window, centre C and width W >= 1, instead "
                    "of the image's maximum")
    ap.add_argument("--voi", action="store_true", help="the file's own Modality LUT + VOI (LUT or window)")
    ap.add_argument("--voi-index", type=int, default=0, help="with --voi: which VOI window / LUT when there "
                    "are several")
    ap.add_argument("--skip-existing", action="store_true")
    args = ap.parse_args(argv)
    win = None
    if args.window is not None:
        try:
            c, w = (float(v) for v in args.window.split(","))
            if not (math.isfinite(c) and math.isfinite(w) and w >= 1):
                raise ValueError
        except ValueError:
            ap.error("--window wants CENTER,WIDTH (numbers, WIDTH >= 1; got %r)" % args.window)
        win = (c, w)
    if args.bit_depth and not 1 <= args.bit_depth <= 16:
        ap.error("--bit-depth wants a whole number 1..16 (got %d)" % args.bit_depth)
    if sum([bool(args.bit_depth), win is not None, args.voi]) > 1:
        ap.error("--bit-depth, --window and --voi are exclusive")
    opts = dict(bit_depth=args.bit_depth, win=win, voi=args.voi, voi_index=args.voi_index)
    if os.path.isdir(args.input):
        if not args.out_dir:
            raise SystemExit("a directory input needs -o OUT_DIR")
        n = bad = 0
        for root, _, files in os.walk(args.input):
            for name in sorted(files):
                if name.startswith("."):
                    continue
                src = os.path.join(root, name)
                rel = os.path.relpath(src, args.input)
                dst = os.path.join(args.out_dir, os.path.splitext(rel)[0] + ".png")
                if args.skip_existing and os.path.exists(dst):
                    continue
                try:
                    convert_file(src, dst, args.size, **opts)
                    n += 1
                except Exception as e:  # keep going over a large tree; report at the end
                    bad += 1
                    print("skipped %s: %s" % (src, e), file=sys.stderr)
        print("converted %d files, %d failed" % (n, bad), file=sys.stderr)
        return 1 if bad and not n else 0
    dst = args.output or (os.path.join(args.out_dir, os.path.splitext(os.path.basename(args.input))[0] + ".png")
                          if args.out_dir else os.path.splitext(args.input)[0] + ".png")
    convert_file(args.input, dst, args.size, **opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
