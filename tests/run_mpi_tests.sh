#!/usr/bin/env bash
# Runs the data-parallel test program under `mpirun -np 2` (one thread per
# rank), shows its output, counts the PASS/FAIL lines (rank 0 prints them)
# and ends with "N passed, M failed" like tests/run_tests.sh.
set -u
t=${1:-build/test_mpi}
MPIRUN=${MPIRUN:-mpirun}
flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
echo "=== $(basename "$t") (mpirun -np 2)"
start=$(date +%s.%N)
# a rank that fails a collective the other one entered would wait forever: bound it
out=$(OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1 timeout "${MPI_TEST_TIMEOUT:-900}" "$MPIRUN" "${flags[@]}" \
      -np 2 -x OMP_NUM_THREADS -x OMPI_MCA_mpi_yield_when_idle "$t" 2>&1)
rc=$?
end=$(date +%s.%N)
printf '%s\n' "$out"
passed=$(printf '%s\n' "$out" | grep -c '^PASS ')
failed=$(printf '%s\n' "$out" | grep -c '^FAIL ')
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "FAIL $(basename "$t"): mpirun exited with status $rc"
  failed=$((failed + 1))
fi
printf -- '--- %s: %d passed, %d failed (%.1f s)\n' "$(basename "$t")" "$passed" "$failed" \
  "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
