#!/usr/bin/env bash
# make bench: GEMM against OpenBLAS (when built with BLAS=openblas) and the
# training step against PyTorch (when torch is importable), side by side in
# one run with the same thread count.
set -u
cd "$(dirname "$0")/.."
T=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$T
echo "== GEMM, $T threads"
# OpenBLAS picks a slow generic kernel on some CPUs; give it the best
# core type for this machine (AVX2 -> Haswell, AVX-512 -> SkylakeX).
if grep -q avx512f /proc/cpuinfo; then core=SkylakeX; else core=Haswell; fi
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$core} build/mama bench gemm
echo "== training step, $T threads"
for cfg in tiny small; do
  build/mama bench train --config $cfg --batch 8 --steps 5 | tail -2
  if python3 -c "import torch" 2>/dev/null; then
    OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$core} python3 bench/bench_train_torch.py --config $cfg --batch 8 --steps 5 --threads $T | tail -1
  else
    echo "(torch not importable: no PyTorch comparison)"
  fi
done
