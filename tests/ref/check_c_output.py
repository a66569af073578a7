"""Compare a C output safetensors file with an expected_<case>.safetensors fixture.

    python3 tests/ref/check_c_output.py EXPECTED.safetensors C_OUTPUT.safetensors [--top K]

For every tensor name present in both files it prints
  max_abs   max |c - e|
  norm_rel  max |c - e| / max(max |e|, atol=1e-3)   (robust for gradients that are ~0 in places; the
                                        figure to use for pass/fail)
  elem_rel  max |c - e| / (|e| + 1e-6 * max|e|)   (element-wise, strict)
then the worst tensors, and names missing on either side.  For debugging only; the C test
does the real comparison.  Exit status 0 always (unless a file cannot be read).

Notes on the fixtures: the gradients of the biases that directly precede a train-mode
BatchNorm (local heads' head.0.bias / head.3.bias) are exactly zero in exact arithmetic
and stored as exact zeros; norm_rel (with its atol floor) treats them sensibly, elem_rel
does not.  In late-0 cases the late-only parameters' gradients are all zero as well.  int64 tensors (buf.*num_batches_tracked)
are compared exactly.
"""
import argparse
import sys

import numpy as np
from safetensors.numpy import load_file


def compare(e, c, atol):
    e64 = e.astype(np.float64)
    c64 = c.astype(np.float64)
    d = np.abs(c64 - e64)
    if d.size == 0:
        return 0.0, 0.0, 0.0
    mx = float(np.abs(e64).max())
    max_abs = float(d.max())
    norm_rel = max_abs / max(mx, atol)
    elem_rel = float((d / (np.abs(e64) + 1e-6 * mx + 1e-30)).max())
    return max_abs, norm_rel, elem_rel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("expected")
    ap.add_argument("c_output")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--atol", type=float, default=1e-3,
                    help="floor of the norm_rel denominator (for all-zero expected tensors)")
    args = ap.parse_args()
    exp = load_file(args.expected)
    out = load_file(args.c_output)
    rows = []
    print(f"{'tensor':72s} {'shape':>18s} {'max_abs':>10s} {'norm_rel':>10s} {'elem_rel':>10s}")
    for name in sorted(exp):
        if name not in out:
            continue
        e, c = exp[name], out[name]
        if e.size != c.size:
            print(f"{name:72s} SIZE MISMATCH expected {e.shape} got {c.shape}")
            rows.append((float("inf"), name))
            continue
        c = c.reshape(e.shape)
        if e.dtype.kind in "iu":
            bad = int((e != c).sum())
            print(f"{name:72s} {str(e.shape):>18s} {'int':>10s} {bad:>10d} mismatches")
            rows.append((float("inf") if bad else 0.0, name))
            continue
        if not np.all(np.isfinite(c)):
            print(f"{name:72s} {str(e.shape):>18s} NON-FINITE values in C output")
            rows.append((float("inf"), name))
            continue
        ma, nr, er = compare(e, c, args.atol)
        rows.append((nr, name))
        print(f"{name:72s} {str(tuple(e.shape)):>18s} {ma:10.3e} {nr:10.3e} {er:10.3e}")
    rows.sort(reverse=True)
    print(f"\nworst {min(args.top, len(rows))} by norm_rel:")
    for nr, name in rows[:args.top]:
        print(f"  {nr:10.3e}  {name}")
    miss_c = sorted(set(exp) - set(out))
    extra = sorted(set(out) - set(exp))
    if miss_c:
        print(f"\n{len(miss_c)} expected tensors not in the C output:")
        for n in miss_c:
            print("  " + n)
    if extra:
        print(f"\n{len(extra)} C tensors not in expected (ignored):")
        for n in extra:
            print("  " + n)
    if rows:
        print(f"\ncompared {len(rows)} tensors; worst norm_rel {rows[0][0]:.3e} ({rows[0][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
