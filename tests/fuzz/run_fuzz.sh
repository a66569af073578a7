#!/usr/bin/env bash
# make fuzz: build each libFuzzer target with clang (ASan + UBSan) and run it
# for a bounded time on a copy of its seed corpus; prints the executions.
set -u
cd "$(dirname "$0")/../.."
secs=${1:-30}
mkdir -p build/fuzz
status=0
for t in json safetensors manifest tokenizer checkpoint; do
  clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I. tests/fuzz/fuzz_$t.c -o build/fuzz/fuzz_$t -lm || { echo "fuzz: cannot build fuzz_$t"; exit 1; }
  rm -rf build/fuzz/corpus_$t && mkdir -p build/fuzz/corpus_$t
  [ -d tests/fuzz/corpus/$t ] && cp -r tests/fuzz/corpus/$t/. build/fuzz/corpus_$t/
  # fuzz_checkpoint makes its seed (the header of a valid micro checkpoint) itself
  dict=; [ -f tests/fuzz/$t.dict ] && dict=-dict=tests/fuzz/$t.dict
  MAMA_FUZZ_SEED_OUT=build/fuzz/corpus_$t/seed build/fuzz/fuzz_$t $dict -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 build/fuzz/corpus_$t \
      > build/fuzz/fuzz_$t.log 2>&1
  rc=$?
  runs=$(grep -m1 'stat::number_of_executed_units' build/fuzz/fuzz_$t.log | awk '{print $2}')
  if [ $rc -eq 0 ]; then echo "fuzz_$t: ${runs:-?} executions in ${secs}s, no crash"
  else echo "fuzz_$t: FAILED (rc $rc), see build/fuzz/fuzz_$t.log"; status=1; fi
done
exit $status
