#!/usr/bin/env bash
# Runs each test program given on the command line, shows its output, counts
# the PASS/FAIL lines and ends with "N passed, M failed".  A program that
# exits non-zero without a FAIL line (a crash, a sanitizer report) counts as
# one failure of its own.
set -u
passed=0
failed=0
for t in "$@"; do
  name=$(basename "$t")
  echo "=== $name"
  start=$(date +%s.%N)
  out=$("$t" 2>&1)
  rc=$?
  end=$(date +%s.%N)
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | grep -c '^PASS ')
  f=$(printf '%s\n' "$out" | grep -c '^FAIL ')
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $name: exited with status $rc"
    failed=$((failed + 1))
  fi
  printf -- '--- %s: %d passed, %d failed (%.1f s)\n' "$name" "$p" "$f" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
