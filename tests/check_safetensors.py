#!/usr/bin/env python3
"""Cross-check mama.h's safetensors I/O against the reference `safetensors`
package, in both directions.

    python3 tests/check_safetensors.py build/test_formats

1. Runs `build/test_formats <tmp>/c.safetensors`, which keeps the file its
   round-trip test wrote; loads it with safetensors (torch framework, so
   BF16 works) and compares every tensor and the metadata with the values
   the C test wrote (hard-coded here, independently).
2. Writes a file with safetensors.torch.save_file (every dtype mama reads,
   odd sizes, a scalar, an empty tensor, metadata) and runs
   `build/test_formats --check-py <file>`, which checks the values in C.
Prints PASS/FAIL lines like the C tests; exits non-zero on any failure.
Skips (exit 0, SKIP line) when safetensors/torch are missing.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
except ImportError as e:  # pragma: no cover
    print(f"SKIP check_safetensors: {e}")
    sys.exit(0)

failures = 0


def report(ok, name, what):
    global failures
    print(f"{'PASS' if ok else 'FAIL'} {name}: {what}")
    if not ok:
        failures += 1


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else "build/test_formats"
    tmp = tempfile.mkdtemp(prefix="mama_st_check_")

    # ---- C writes, Python reads
    cpath = os.path.join(tmp, "c.safetensors")
    r = subprocess.run([exe, cpath], capture_output=True, text=True)
    report(r.returncode == 0 and os.path.exists(cpath), "c_writer_ran", f"{exe} exit {r.returncode}")
    f32 = np.array([1.5, -2.25, 3.0, 0.1, -1e-8, 65504.0], dtype=np.float32).reshape(2, 3)
    expect = {
        "w.f32": torch.from_numpy(f32),
        "w.f16": torch.from_numpy(f32.astype(np.float16)),
        "w.bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16).reshape(2, 1, 1),
        "ids.i32": torch.tensor([0, -1, 2147483647, -2147483648, 42], dtype=torch.int32),
        "ids.i64": torch.tensor([0, -5, 9007199254740993, 7], dtype=torch.int64),
        "small.i64": torch.tensor([5, 6, 7], dtype=torch.int64),
        "small.i32": torch.tensor([5, 6, 7], dtype=torch.int32),
        "bytes.u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "d.f64": torch.tensor([0.1, -3.5], dtype=torch.float64),
        "logit_scale": torch.tensor(2.6592600345611572, dtype=torch.float32),
        "empty": torch.zeros((0, 7), dtype=torch.float32),
    }
    try:
        with safe_open(cpath, framework="pt") as f:
            keys = set(f.keys())
            meta = f.metadata()
            got = {k: f.get_tensor(k) for k in keys}
        report(keys == set(expect), "py_reads_c_keys", f"{sorted(keys)}")
        bad = []
        for k, v in expect.items():
            g = got.get(k)
            ok = g is not None and g.dtype == v.dtype and tuple(g.shape) == tuple(v.shape) and torch.equal(g, v)
            if not ok:
                bad.append(k)
        report(not bad, "py_reads_c_values", f"11 tensors equal by dtype, shape and value; bad: {bad}")
        report(meta == {"format": "pt2", "note": "quote\" slash\\ newline\n \u00e9"}, "py_reads_c_metadata", repr(meta))
        raw = open(cpath, "rb").read()
        n = int.from_bytes(raw[:8], "little")
        report((8 + n) % 8 == 0 and raw[8:8 + n].rstrip(b" ").endswith(b"}"), "c_header_padding",
               f"header {n} bytes, data 8-aligned, space padded")
    except Exception as e:  # noqa: BLE001
        report(False, "py_reads_c", f"safetensors raised {e!r}")

    # ---- Python writes, C reads
    ppath = os.path.join(tmp, "py.safetensors")
    tensors = {
        "a.f32": torch.arange(37, dtype=torch.float32).reshape(37) * 0.25 - 3,
        "b.f16": (torch.arange(6, dtype=torch.float32) * 0.5 - 1).to(torch.float16).reshape(2, 3),
        "c.bf16": (torch.arange(5, dtype=torch.float32) * 1.5 - 2).to(torch.bfloat16),
        "d.i64": torch.tensor([[1, 2], [3, 28901]], dtype=torch.int64),
        "e.i32": torch.tensor([-7, 0, 7], dtype=torch.int32),
        "f.u8": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "g.scalar": torch.tensor(4.6052, dtype=torch.float32),
        "h.empty": torch.zeros((3, 0), dtype=torch.float32),
        "img_encoder_q.model.blocks.0.attn.qkv.weight": torch.ones((3, 1, 2), dtype=torch.float32),
    }
    save_file(tensors, ppath, metadata={"format": "pt", "made_by": "python"})
    r = subprocess.run([exe, "--check-py", ppath], capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    report(r.returncode == 0, "c_reads_py", f"{exe} --check-py exit {r.returncode} {r.stderr.strip()}")
    print(f"# check_safetensors: {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
