#!/usr/bin/env bash
# bench/bench_underload.sh - robust under load (issue 18 item 5): with one
# competing CPU-bound process, n threads must never be slower than one.
#
#   bash bench/bench_underload.sh            (after `make`; uses build/mama)
#
# Times `mama bench train` (CONFIGS, default tiny and small) and
# `mama bench encode` (ENC_CONFIG, default small) on 1 and on n threads
# (n = nproc), each on a quiet machine and with one competing CPU-bound
# process (`yes > /dev/null`, not pinned), and prints images/s with the
# load average of the moment.  train: the median step (bench train's
# images_per_s, warm-up excluded); encode: the median pass after the
# first.  The per-call choice between all threads and one is on (the
# default); TUNE="0 1" also times it off.  Last line: underload_worst_ratio=
# the lowest n-thread / one-thread images/s with the competitor, over the
# benchmarks (>= 1 is the goal; about 1 where one thread is picked).
#
# Environment: MAMA (build/mama), CONFIGS ("tiny small"), ENC_CONFIG
# (small), STEPS (train steps, 10; small: 4), ENC_STEPS (encode passes, 8),
# THREADS ("1 $(nproc)"), TUNE (1), WAIT (OMP_WAIT_POLICY for the runs:
# "default" leaves the environment's; "default passive" times both; the
# summary uses the first).
set -u
MAMA=${MAMA:-build/mama}
CONFIGS=${CONFIGS:-tiny small}
ENC_CONFIG=${ENC_CONFIG:-small}
STEPS=${STEPS:-10}
ENC_STEPS=${ENC_STEPS:-8}
THREADS=${THREADS:-1 $(nproc)}
TUNE=${TUNE:-1}
WAIT=${WAIT:-default}
[ -x "$MAMA" ] || { echo "error: $MAMA not found (run make first)" >&2; exit 1; }

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cpus," \
     "flags: $(grep -m1 -o -w -e avx512f -e avx512_bf16 /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "mama: $MAMA ($(git log -1 --format=%h 2>/dev/null || echo '?')), OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}," \
     "GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-unset}"

comp=""
stop_competitor() { [ -n "$comp" ] && kill "$comp" 2>/dev/null; wait "$comp" 2>/dev/null; comp=""; }
trap stop_competitor EXIT INT TERM

load() { cut -d' ' -f1-3 /proc/loadavg; }
# median of the numbers on stdin
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A IPS
run_one() { # kind config threads tune wait
  local kind=$1 cfg=$2 t=$3 tune=$4 out ips steps
  local -a env=(OMP_NUM_THREADS="$t")
  [ "$5" = default ] || env+=(OMP_WAIT_POLICY="$5")
  if [ "$kind" = train ]; then
    steps=$STEPS; [ "$cfg" = tiny ] || steps=$(( STEPS < 4 ? STEPS : 4 ))
    out=$(env "${env[@]}" "$MAMA" bench train --config "$cfg" --steps "$steps" --tune "$tune" 2>&1)
    ips=$(printf '%s\n' "$out" | sed -n 's/^images_per_s=\([0-9.]*\).*/\1/p')
  else
    out=$(env "${env[@]}" "$MAMA" bench encode --config "$cfg" --batch 4 --steps "$ENC_STEPS" --tune "$tune" 2>&1)
    ips=$(printf '%s\n' "$out" | sed -n 's/^pass \([0-9]*\): .*(\([0-9.]*\) images\/s).*/\1 \2/p' |
          awk '$1 > 0 { print $2 }' | median)
  fi
  [ -n "$ips" ] || { echo "error: $kind $cfg: no result" >&2; printf '%s\n' "$out" | tail -3 >&2; ips=nan; }
  echo "$ips"
}

for mode in quiet competing; do
  stop_competitor
  if [ "$mode" = competing ]; then
    yes > /dev/null &
    comp=$!
    sleep 1
  fi
  echo "== $mode${comp:+ (competitor: yes > /dev/null, pid $comp)}"
  for wait in $WAIT; do
    for tune in $TUNE; do
      for t in $THREADS; do
        for cfg in $CONFIGS; do
          l=$(load); v=$(run_one train "$cfg" "$t" "$tune" "$wait")
          IPS[train_${cfg}_${t}_${mode}_${tune}_$wait]=$v
          printf 'train  %-6s %3d threads tune %s wait %-7s %-9s %8s images/s  (load %s)\n' "$cfg" "$t" "$tune" \
                 "$wait" "$mode" "$v" "$l"
        done
        l=$(load); v=$(run_one encode "$ENC_CONFIG" "$t" "$tune" "$wait")
        IPS[encode_${ENC_CONFIG}_${t}_${mode}_${tune}_$wait]=$v
        printf 'encode %-6s %3d threads tune %s wait %-7s %-9s %8s images/s  (load %s)\n' "$ENC_CONFIG" "$t" "$tune" \
               "$wait" "$mode" "$v" "$l"
      done
    done
  done
done
stop_competitor

# n threads / one thread with the competitor: the last TUNE, the first WAIT
tune=${TUNE##* }
wait=${WAIT%% *}
worst=""
nmax=${THREADS##* }
for b in $(for cfg in $CONFIGS; do echo "train_$cfg"; done) "encode_$ENC_CONFIG"; do
  one=${IPS[${b}_1_competing_${tune}_$wait]:-nan} n=${IPS[${b}_${nmax}_competing_${tune}_$wait]:-nan}
  r=$(awk -v a="$n" -v b="$one" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.3f", a / b; else print "nan" }')
  echo "$b: $nmax threads / 1 thread with a competitor = $r (quiet: $(awk -v a="${IPS[${b}_${nmax}_quiet_${tune}_$wait]:-0}" \
       -v b="${IPS[${b}_1_quiet_${tune}_$wait]:-0}" 'BEGIN { if (b + 0 > 0) printf "%.3f", a / b; else print "nan" }'))"
  worst=$(awk -v w="${worst:-inf}" -v r="$r" 'BEGIN { if (r == "nan" || w == "nan") print "nan"; else if (w == "inf" || r + 0 < w + 0) print r; else print w }')
done
echo "underload_worst_ratio=$worst"
