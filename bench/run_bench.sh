#!/usr/bin/env bash
# make bench: GEMM against OpenBLAS and the training step against PyTorch,
# side by side in one run with the same thread count.  OpenBLAS (Debian's
# libopenblas-dev) and torch are optional: without them only mama.h runs.
set -u
cd "$(dirname "$0")/.."
T=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$T
# OpenBLAS's auto-detection can fall back to a slow generic kernel: give it
# the best core type of this CPU (AVX-512 -> SkylakeX, AVX2 -> Haswell).
if grep -q avx512f /proc/cpuinfo; then core=SkylakeX; else core=Haswell; fi
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$core}
bin=build/mama
if [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ]; then
  ${CC:-cc} -std=c99 -O2 -fopenmp -I. -DMAMA_BENCH_OPENBLAS -I/usr/include/x86_64-linux-gnu examples/mama.c \
      -o build/mama_openblas -lopenblas -lm && bin=build/mama_openblas
  # the OpenMP build of OpenBLAS when installed (libopenblas0-openmp)
  [ -d /usr/lib/x86_64-linux-gnu/openblas-openmp ] && export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp
fi
echo "== GEMM, $T threads, OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
$bin bench gemm
echo "== training step (forward, 4 losses, backward, AdamW), batch 8, $T threads"
# The two run alternately, ROUNDS times each (default 3); each run reports
# its median step, and the best median of each side is compared: on a
# shared or drifting machine the best of several alternating runs is the
# closest either side gets to an undisturbed one, and both get the same
# chances.
ROUNDS=${ROUNDS:-3}
have_torch=0
python3 -c "import torch" 2>/dev/null && have_torch=1
for cfg in tiny small; do
  steps=10; [ $cfg = small ] && steps=4
  cbest=""; tbest=""
  for r in $(seq "$ROUNDS"); do
    c=$($bin bench train --config $cfg --batch 8 --steps $steps | tail -1 | cut -d= -f2)
    cbest=$(awk -v a="$c" -v b="$cbest" 'BEGIN{print (b == "" || a < b) ? a : b}')
    if [ $have_torch = 1 ]; then
      t=$(python3 bench/bench_train_torch.py --preset $cfg --batch 8 --steps $steps --threads $T | tail -1 | cut -d= -f2)
      tbest=$(awk -v a="$t" -v b="$tbest" 'BEGIN{print (b == "" || a < b) ? a : b}')
      echo "  $cfg round $r: mama.h ${c} ms, PyTorch ${t} ms"
    else
      echo "  $cfg round $r: mama.h ${c} ms"
    fi
  done
  if [ $have_torch = 1 ]; then
    echo "$cfg: mama.h ${cbest} ms, PyTorch ${tbest} ms (best of $ROUNDS alternating runs), speed-up $(awk -v a="$tbest" -v b="$cbest" 'BEGIN{printf "%.2f", a/b}')x"
  else
    echo "$cfg: mama.h ${cbest} ms (torch not importable: no PyTorch comparison)"
  fi
done
