# Makefile for mama.h - the library is one header; this builds the `mama`
# tool, the tests, the benchmarks and the optional CUDA backend.
#
#   make            build/mama (the command-line tool)
#   make test       build and run every test (ends with "N passed, M failed")
#   make asan       the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      GEMM and training-step benchmarks (vs OpenBLAS / PyTorch when present),
#                   then image encoding vs ONNX Runtime (make bench-onnx)
#   make bench-onnx image encoding, small and base, 1 and 2 threads, vs ONNX Runtime
#                   (needs torch, onnx, onnxruntime; says SKIP without them)
#   make cuda       the CUDA backend (needs nvcc; says so and succeeds without it)
#   make demo       the main job on synthetic data
#   make fuzz       run each libFuzzer target for FUZZ_SECONDS (clang)
#   make clean
#
#   make examples   build/embed_image, build/zeroshot_image, build/train_loop
#   make test-mpi   data-parallel tests under `mpirun -np 2` (OpenMPI: openmpi-bin libopenmpi-dev)
#
# Options: BLAS=openblas (compare with / link OpenBLAS), CC=clang,
#          MPI=1 (build with mpicc and -DMAMA_MPI, which makes the tool include the MPI
#          communicator mama_mpi.h: `mpirun -np N build/mama pretrain ...`;
#          with `make cuda MPI=1` also compiles the NCCL communicator mama_nccl.c).

CC      ?= cc
CXX     ?= g++
NVCC    ?= nvcc
STB_DIR ?= /usr/include/stb
WARN     = -Wall -Wextra -Wpedantic -Werror
CFLAGS  ?= -O2 -g
OMPFLAGS = -fopenmp
ALL_CFLAGS = -std=c99 $(WARN) $(CFLAGS) $(OMPFLAGS) -I. -I/usr/include
LDLIBS   = -lm
BUILD    = build
FUZZ_SECONDS ?= 30

# Data parallel over MPI (mama.h section 12, the communicator in mama_mpi.h).
# The default build has no MPI dependency; MPI=1 switches the compiler to
# mpicc for every target and defines MAMA_MPI (examples/mama.c then includes
# mama_mpi.h).
MPI     ?= 0
MPICC   ?= mpicc
MPIRUN  ?= mpirun
CUDA_HOME ?= /usr/local/cuda
ifeq ($(MPI),1)
  CC := $(MPICC)
  ALL_CFLAGS += -DMAMA_MPI
endif

ifeq ($(BLAS),openblas)
  ALL_CFLAGS += -DMAMA_BENCH_OPENBLAS -I/usr/include/x86_64-linux-gnu
  LDLIBS += -lopenblas
endif

HEADERS = mama.h mama_plot.h mama_synth.h mama_tokenizer_train.h mama_verify.h mama_mpi.h
# test_mpi needs MPI and two ranks: `make test-mpi`, not part of `make test`
TEST_SRC = $(filter-out tests/test_mpi.c,$(wildcard tests/test_*.c))
TESTS   = $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRC))

.PHONY: all test asan bench bench-onnx cuda demo ablation clean fuzz stb compile-check examples test-mpi

all: stb $(BUILD)/mama

# stb_image comes from Debian's libstb-dev; never copied into the repo.
stb:
	@if [ ! -f $(STB_DIR)/stb_image.h ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "stb_image not found: installing Debian's libstb-dev"; \
	    (apt-get install -y -qq libstb-dev >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq libstb-dev >/dev/null)) || exit 1; \
	  else \
	    echo "error: stb_image.h not found in $(STB_DIR). Install it with:"; \
	    echo "    sudo apt-get install libstb-dev"; exit 1; \
	  fi; \
	fi

$(BUILD):
	@mkdir -p $(BUILD)

# build/.mpi-N records the MPI= setting build/mama was built with, so that
# switching between `make` and `make MPI=1` rebuilds it.
$(BUILD)/.mpi-$(MPI): | $(BUILD)
	@rm -f $(BUILD)/.mpi-*; touch $@

$(BUILD)/mama: examples/mama.c examples/mama_demo.c examples/device.c bench/bench_gemm.c bench/bench_train.c $(HEADERS) $(BUILD)/.mpi-$(MPI) | $(BUILD)
	$(CC) $(ALL_CFLAGS) examples/mama.c -o $@ $(LDLIBS)

examples: $(BUILD)/embed_image $(BUILD)/zeroshot_image $(BUILD)/train_loop

$(BUILD)/embed_image $(BUILD)/zeroshot_image $(BUILD)/train_loop: $(BUILD)/%: examples/%.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c tests/test_util.h $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

# two models training in two threads (POSIX threads)
$(BUILD)/test_threads: LDLIBS += -pthread

# The header must also compile as C11 with clang and as C++ with g++.  The
# companion headers too: all of them in one file with mama.h's
# implementation, and each implementation alone in its own file (they use
# only mama.h's public API), the pieces linked into one program.  mama_mpi.h's
# implementation needs <mpi.h>: it is checked the same way through $(MPICC)
# (OMPI_CC / MPICH_CC select the compiler behind the wrapper) when that
# exists, and skipped with a note otherwise.
COMPANIONS = plot synth tokenizer_train verify
compile-check: | $(BUILD)
	@printf '#define MAMA_IMPLEMENTATION\n#include "mama.h"\n' > $(BUILD)/compile_check.c
	@for c in $(COMPANIONS); do C=$$(echo $$c | tr a-z A-Z); \
	  printf '#define MAMA_%s_IMPLEMENTATION\n#include "mama_%s.h"\n' $$C $$c >> $(BUILD)/compile_check.c; \
	  printf '#include "mama.h"\n#define MAMA_%s_IMPLEMENTATION\n#include "mama_%s.h"\n' $$C $$c > $(BUILD)/compile_check_$$c.c; done
	@printf 'int main(void){return 0;}\n' >> $(BUILD)/compile_check.c
	clang -std=c11 $(WARN) -O2 -fopenmp -c -I. $(BUILD)/compile_check.c -o $(BUILD)/compile_check.o
	$(CXX) -x c++ -std=c++11 -Wall -Wextra -Werror -O0 -fsyntax-only -I. $(BUILD)/compile_check.c
	@for c in $(COMPANIONS); do \
	  $(CC) -std=c99 $(WARN) -O2 -fopenmp -c -I. $(BUILD)/compile_check_$$c.c -o $(BUILD)/compile_check_$$c.o && \
	  clang -std=c11 $(WARN) -O2 -fopenmp -fsyntax-only -I. $(BUILD)/compile_check_$$c.c && \
	  $(CXX) -x c++ -std=c++11 -Wall -Wextra -Werror -O0 -fsyntax-only -I. $(BUILD)/compile_check_$$c.c || exit 1; done
	@printf '#define MAMA_IMPLEMENTATION\n#include "mama.h"\nint main(void){return 0;}\n' > $(BUILD)/compile_check_core.c
	$(CC) -std=c99 $(WARN) -O0 -fopenmp -I. $(BUILD)/compile_check_core.c $(patsubst %,$(BUILD)/compile_check_%.o,$(COMPANIONS)) -o $(BUILD)/compile_check_link $(LDLIBS)
	@echo "compile-check: companions $(COMPANIONS): C99 (gcc), C11 (clang), C++11 (g++), each in its own file, linked"
	@if command -v $(MPICC) >/dev/null 2>&1; then \
	  printf '#include "mama.h"\n#define MAMA_MPI_IMPLEMENTATION\n#include "mama_mpi.h"\n' > $(BUILD)/compile_check_mpi.c && \
	  $(MPICC) -std=c99 $(WARN) -O2 -fopenmp -c -I. $(BUILD)/compile_check_mpi.c -o $(BUILD)/compile_check_mpi.o && \
	  OMPI_CC=clang MPICH_CC=clang $(MPICC) -std=c11 $(WARN) -O2 -c -I. $(BUILD)/compile_check_mpi.c -o $(BUILD)/compile_check_mpi_clang.o && \
	  OMPI_CC=$(CXX) MPICH_CC=$(CXX) $(MPICC) -x c++ -std=c++11 -Wall -Wextra -Werror -O0 -c -I. $(BUILD)/compile_check_mpi.c -o $(BUILD)/compile_check_mpi_cxx.o && \
	  $(MPICC) -std=c99 $(WARN) -O0 -fopenmp -I. $(BUILD)/compile_check_core.c $(BUILD)/compile_check_mpi.o -o $(BUILD)/compile_check_mpi_link $(LDLIBS) && \
	  echo "compile-check: companion mpi (through $(MPICC)): C99 (gcc), C11 (clang), C++11 (g++), in its own file, linked" || exit 1; \
	else echo "compile-check: $(MPICC) not found: companion mpi (mama_mpi.h needs <mpi.h>) not checked"; fi
	@for d in MAMA_NO_SIMD MAMA_NO_THREADS "MAMA_NO_SIMD -DMAMA_NO_THREADS"; do \
	  $(CC) -std=c99 $(WARN) -O1 -fopenmp -c -D$$d -I. $(BUILD)/compile_check_core.c -o $(BUILD)/compile_check_macro.o && \
	  clang -std=c11 $(WARN) -O1 -fsyntax-only -D$$d -I. $(BUILD)/compile_check_core.c || exit 1; done
	@echo "compile-check: the configuration macros MAMA_NO_SIMD, MAMA_NO_THREADS and both: C99 (gcc), C11 (clang) clean"
	@for e in embed_image zeroshot_image train_loop; do $(CC) -std=c99 $(WARN) -fsyntax-only -I. examples/$$e.c || exit 1; done
	@if [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ]; then \
	  $(CC) -std=c99 $(WARN) -fopenmp -fsyntax-only -DMAMA_USE_CBLAS -I. -I/usr/include/x86_64-linux-gnu $(BUILD)/compile_check.c && \
	  echo "compile-check: MAMA_USE_CBLAS (with the system's cblas.h) clean"; fi
	@echo "compile-check: C99 (gcc), C11 (clang -O2) and C++11 (g++) clean; examples compile"

test: stb compile-check $(TESTS) $(BUILD)/mama
	@bash tests/run_tests.sh $(TESTS) tests/check_bss.sh tests/check_dropin.sh tests/test_cli.sh tests/test_predict.sh

asan: stb
	@$(MAKE) -j2 --no-print-directory BUILD=build/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" build/asan/mama $(patsubst tests/%.c,build/asan/%,$(TEST_SRC))
	@ASAN_OPTIONS=detect_leaks=1 bash tests/run_tests.sh $(patsubst tests/%.c,build/asan/%,$(TEST_SRC))

# Data-parallel tests: 2 MPI ranks against one process (tests/test_mpi.c).
# Each rank single-threaded; --oversubscribe lets 2 ranks share fewer cores.
$(BUILD)/test_mpi: tests/test_mpi.c tests/test_util.h $(HEADERS) | $(BUILD)
	$(MPICC) -std=c99 $(WARN) $(CFLAGS) $(OMPFLAGS) -I. -I/usr/include $< -o $@ $(LDLIBS)

test-mpi: stb $(BUILD)/test_mpi
	@MPIRUN="$(MPIRUN)" bash tests/run_mpi_tests.sh $(BUILD)/test_mpi

# where the data loader's time goes (issue 15 item 9): build/bench_loader MANIFEST [N]
$(BUILD)/bench_loader: bench/bench_loader.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

bench: all
	@echo "== GEMM (OMP_NUM_THREADS=$${OMP_NUM_THREADS:-all}) =="
	@bash bench/run_bench.sh
	@python3 bench/bench_onnx.py

# issue 18: ONNX_ARGS="--configs small --threads 1 --rounds 5" to narrow it
bench-onnx: all
	@python3 bench/bench_onnx.py $(ONNX_ARGS)

# make cuda: build/mama_cuda.o (mama_cuda.cu), build/test_cuda (tests/cuda/,
# CPU vs CUDA parity; not part of `make test`: CI has no GPU) and build/mama
# linked with the CUDA backend (--device cuda).  Without nvcc it says so and
# succeeds.  CUDA_ARCH selects the GPU (sm_90 = H100); CUDA_ARCH= builds for
# nvcc's default architecture.  CUDA_WERROR=0 builds without -Werror (what
# bench/gpu_check.sh falls back to when a strict build fails on a GPU
# machine's other toolkit).
CUDA_ARCH ?= sm_90
CUDA_WERROR ?= 1
NVCC_FLAGS = -O2 -std=c++17 $(if $(CUDA_ARCH),-arch=$(CUDA_ARCH)) $(if $(filter 1,$(CUDA_WERROR)),--Werror all-warnings) -Xcompiler -Wall,-Wextra -I.
CUDA_LIBS  = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
# image decoding is optional here: a GPU machine without libstb-dev still builds
CUDA_CFLAGS = $(if $(filter 1,$(CUDA_WERROR)),$(ALL_CFLAGS),$(filter-out -Werror,$(ALL_CFLAGS))) $(if $(wildcard $(STB_DIR)/stb_image.h),,-DMAMA_NO_STB_IMAGE)
cuda:
	@nvcc=$$(command -v $(NVCC) || { [ -x $(CUDA_HOME)/bin/nvcc ] && echo $(CUDA_HOME)/bin/nvcc; }); \
	if [ -z "$$nvcc" ]; then \
	  echo "cuda: nvcc not found; skipping the CUDA backend (the CPU build is unaffected)"; exit 0; \
	fi; \
	mkdir -p $(BUILD) && \
	echo "$$nvcc $(NVCC_FLAGS) -c mama_cuda.cu -o $(BUILD)/mama_cuda.o (and the C parts alongside)" && \
	{ $$nvcc $(NVCC_FLAGS) -c mama_cuda.cu -o $(BUILD)/mama_cuda.o & p1=$$!; \
	  $(CC) $(CUDA_CFLAGS) -c tests/cuda/test_cuda.c -o $(BUILD)/test_cuda.o & p2=$$!; \
	  $(CC) $(CUDA_CFLAGS) -DMAMA_CUDA -c examples/mama.c -o $(BUILD)/mama_cli_cuda.o & p3=$$!; \
	  wait $$p1; r1=$$?; wait $$p2; r2=$$?; wait $$p3; r3=$$?; [ $$r1 = 0 ] && [ $$r2 = 0 ] && [ $$r3 = 0 ]; } && \
	$(CC) $(CUDA_CFLAGS) $(BUILD)/test_cuda.o $(BUILD)/mama_cuda.o -o $(BUILD)/test_cuda $(CUDA_LIBS) $(LDLIBS) && \
	$(CC) $(CUDA_CFLAGS) $(BUILD)/mama_cli_cuda.o $(BUILD)/mama_cuda.o -o $(BUILD)/mama $(CUDA_LIBS) $(LDLIBS) && \
	echo "cuda: built $(BUILD)/mama_cuda.o, $(BUILD)/test_cuda and $(BUILD)/mama with --device cuda" && \
	if [ "$(MPI)" = 1 ]; then \
	  $(MPICC) -std=c99 $(if $(filter 1,$(CUDA_WERROR)),$(WARN),$(filter-out -Werror,$(WARN))) -O2 -DMAMA_NCCL -I. -isystem $(CUDA_HOME)/include -c mama_nccl.c -o $(BUILD)/mama_nccl.o && \
	  echo "cuda: built $(BUILD)/mama_nccl.o (NCCL communicator; link -L$(CUDA_HOME)/lib64 -lnccl -lcudart)"; \
	fi

demo: all
	build/mama demo --out demo

ablation: all
	@[ -f demo/REPORT.md ] || build/mama demo --out demo
	build/mama demo --out demo --ablation

fuzz:
	@bash tests/fuzz/run_fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)
