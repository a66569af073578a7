#!/usr/bin/env bash
# bench/gpu_check.sh - the whole GPU verification in one run (one H100, under
# 8 minutes): build, the CPU-vs-CUDA parity test, then the training-step
# benchmark of the `base` config (518 px ViT-B/14 + the 2.7B GPT-2 text tower
# in LoRA mode) in mama.h and in PyTorch on the same GPU, batch 8 and, time
# and memory permitting, 36.  Prints everything needed to judge the result.
#
#   bash bench/gpu_check.sh            (from the repository root)
#
# Environment: BUDGET (seconds, default 470) bounds the whole script; every
# stage has its own timeout and later stages are skipped when the budget runs
# short.  STEPS (default 3) timed steps per benchmark.  If a CUDA kernel
# faults, rerun the failing command with MAMA_CUDA_DEBUG=1 (a sync after
# every launch) to have the message name the kernel.  Nothing here has been
# run yet: it was written on a machine without a GPU.
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET=${BUDGET:-470}
STEPS=${STEPS:-3}
export PATH="$PATH:/usr/local/cuda/bin"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
stage() { echo; echo "=== [$(elapsed)s] $*"; }
# run a stage with a timeout no longer than the budget left (minus a margin)
run() {
  local limit=$1; shift
  local l=$(( $(left) - 5 ))
  [ "$l" -lt "$limit" ] && limit=$l
  if [ "$limit" -lt 10 ]; then echo "SKIPPED (budget spent): $*"; return 124; fi
  echo "+ (timeout ${limit}s) $*"
  timeout --signal=KILL "$limit" "$@"
  local rc=$?
  [ $rc -eq 137 ] && echo "TIMEOUT after ${limit}s: $*"
  return $rc
}
val() { grep -o "^$1=[0-9.]*" "$2" 2>/dev/null | tail -1 | cut -d= -f2; }

stage "machine"
nvidia-smi || echo "nvidia-smi failed"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
MEM_MB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
# dense BF16 tensor-core peak (TFLOP/s), the denominator of every MFU below
case "$GPU" in
  *H100*PCIe*) PEAK=756 ;;
  *H100*|*H200*|*GH200*) PEAK=989 ;;
  *A100*) PEAK=312 ;;
  *) PEAK=0 ;;
esac
echo "gpu: ${GPU:-unknown}, ${MEM_MB:-?} MiB; MFU denominator: ${PEAK} TFLOP/s (dense BF16; 0 = unknown GPU)"
echo "cpu: $(nproc) cores; OMP_NUM_THREADS=$OMP_NUM_THREADS; nvcc: $(command -v nvcc || echo none)"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 | tail -1

stage "build (make cuda)"
# Binaries built elsewhere (e.g. carried over in build/) are reused when they
# are newer than every source and their libraries resolve; FORCE_BUILD=1
# rebuilds anyway.
fresh=1
for f in build/mama build/test_cuda; do
  [ -x "$f" ] || fresh=0
  [ -x "$f" ] && ldd "$f" 2>/dev/null | grep -q "not found" && fresh=0
  for src in mama.h mama_cuda.cu tests/cuda/test_cuda.c examples/mama.c examples/device.c examples/mama_demo.c \
             bench/bench_train.c bench/bench_gemm.c; do
    [ -x "$f" ] && [ "$src" -nt "$f" ] && fresh=0
  done
done
if [ "$fresh" = 1 ] && [ "${FORCE_BUILD:-0}" != 1 ]; then
  echo "build/mama and build/test_cuda are newer than the sources: not rebuilding"
elif command -v nvcc >/dev/null 2>&1; then
  run 240 make --no-print-directory -j2 cuda || echo "BUILD FAILED"
else
  echo "nvcc not found: using the binaries already in build/ (if any)"
fi
ls -l build/mama build/test_cuda build/mama_cuda.o 2>&1

stage "parity: build/test_cuda (every op and whole tiny steps, CUDA vs CPU; MAMA_CUDA_DEBUG=1: a sync after each launch)"
MAMA_CUDA_DEBUG=1 run 150 build/test_cuda 2>&1 | tee /tmp/gpu_check_test.txt | grep -v '^PASS' ; echo "(PASS lines hidden; their count:)"
grep -c '^PASS' /tmp/gpu_check_test.txt
tail -1 /tmp/gpu_check_test.txt

stage "op timing: build/test_cuda --timing (GPU time of the hot ops at base shapes)"
run 60 build/test_cuda --timing

# The C benchmark prints train_step_ms, images_per_s, model_tflops_per_s, mfu.
# --precision bf16: the GEMMs on BF16 tensor cores (FP32 accumulation); the
# activations stay FP32 in memory (see README, CUDA backend).
bench_c() { # batch checkpoint log
  run 200 build/mama bench train --device cuda --precision bf16 --config base --batch "$1" --checkpoint "$2" \
      --steps "$STEPS" --peak-tflops "$PEAK" 2>&1 | tee "$3"
}
bench_t() { # batch log
  if python3 -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    run 150 python3 bench/bench_train_torch.py --preset base --device cuda --bf16 --dropout 0.1 --batch "$1" \
        --steps "$STEPS" --warmup 2 --peak-tflops "$PEAK" 2>&1 | tail -8 | tee "$2"
  else
    echo "PyTorch with CUDA is not available here: no PyTorch comparison" | tee "$2"
  fi
}
summary() { # label clog tlog
  local c t
  c=$(val train_step_ms "$2"); t=$(val torch_train_step_ms "$3")
  echo "$1: mama.h ${c:-n/a} ms/step ($(val images_per_s "$2") img/s, MFU $(val mfu "$2")), PyTorch ${t:-n/a} ms/step ($(val images_per_s "$3") img/s, MFU $(val mfu "$3"))$( [ -n "$c" ] && [ -n "$t" ] && awk -v a="$t" -v b="$c" 'BEGIN{printf ", speed-up vs PyTorch %.2fx", a/b}')"
}

stage "benchmark: base, batch 8, mama.h (CUDA, bf16 GEMMs)"
bench_c 8 0 /tmp/gpu_check_c8.txt
stage "benchmark: base, batch 8, PyTorch (bf16 autocast, SDPA, fused AdamW)"
bench_t 8 /tmp/gpu_check_t8.txt

if [ "$(left)" -gt 200 ]; then
  stage "benchmark: base, batch 36 (gradient checkpointing on the mama.h side), mama.h"
  bench_c 36 1 /tmp/gpu_check_c36.txt
  stage "benchmark: base, batch 36, PyTorch"
  bench_t 36 /tmp/gpu_check_t36.txt
else
  echo; echo "batch 36 skipped: $(left)s of the budget left"
fi

stage "summary"
echo "gpu: ${GPU:-unknown}"
echo "parity: $(tail -1 /tmp/gpu_check_test.txt)"
summary "base batch 8 " /tmp/gpu_check_c8.txt /tmp/gpu_check_t8.txt
[ -f /tmp/gpu_check_c36.txt ] && summary "base batch 36" /tmp/gpu_check_c36.txt /tmp/gpu_check_t36.txt
echo "model FLOPs: bench/bench_train.c bench_step_flops (vision 3F, LoRA text 2F_lin + 3F_att); MFU vs ${PEAK} TFLOP/s"
echo "total $(elapsed)s"
