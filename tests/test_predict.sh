#!/usr/bin/env bash
# tests/test_predict.sh - `mama predict` and what goes with it (issue 15
# items 3, 6, 7), through build/mama on a few synthetic images:
#   - the CSV header; each image row's density, BI-RADS and cancer columns
#     sum to 1;
#   - the breast (study, side) and exam (study) mean and max rows equal the
#     values recomputed here (awk) from the image rows;
#   - probe --save-head, then predict --head: the density columns equal the
#     probe's own per-image probabilities (probe --probs) on the same images;
#   - a checkpoint records its tokenizer: predict run from another folder
#     without --tokenizer finds it; pretrain --config base without
#     --tokenizer is refused before any model is built.
# Usage: bash tests/test_predict.sh [build dir]
set -u
BUILD=${1:-${BUILD:-build}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAMA=$ROOT/$BUILD/mama
T=$ROOT/$BUILD/test_predict
rm -rf "$T"; mkdir -p "$T"
fails=0
pass() { echo "PASS predict_$1: $2"; }
flunk() { echo "FAIL predict_$1: $2"; fails=$((fails + 1)); }
if [ ! -x "$MAMA" ]; then echo "FAIL predict: $MAMA not built"; exit 1; fi

cd "$ROOT"
"$MAMA" synth --out "$T/data" --studies 12 --size 64 --seed 11 > /dev/null &&
"$MAMA" pretrain --manifest "$T/data/manifest.csv" --out "$T/ckpt.safetensors" --steps 2 --batch 4 --accum 1 \
  --warmup 0 --val-every 0 --tokenizer weights/tiny_vocab > /dev/null 2>&1 ||
  { echo "FAIL predict_setup: synth or pretrain failed"; exit 1; }
M="$T/data/manifest.csv"
# six images of two studies (from the manifest's first rows)
IMGS=$(awk -F, 'NR > 1 && NR <= 7 { print $1 }' "$M")

# 1. predict from another folder, tokenizer from the checkpoint's record
out=$(cd "$T/data" && "$MAMA" predict --weights ../ckpt.safetensors $IMGS --manifest manifest.csv --csv ../p.csv 2>&1)
rc=$?
if [ $rc = 0 ] && printf '%s' "$out" | grep -q "tokenizer: .*(recorded in ../ckpt.safetensors)"; then
  pass tokenizer_record "run in $T/data without --tokenizer: $(printf '%s' "$out" | grep 'tokenizer:')"
else
  flunk tokenizer_record "status $rc: $(printf '%s' "$out" | tail -2)"
fi
want="level,id,study,side,density_1,density_2,density_3,density_4,birads_A,birads_N,birads_B,birads_P,birads_S,birads_M,birads_K,cancer_0,cancer_1"
if [ "$(head -1 "$T/p.csv" 2>/dev/null)" = "$want" ]; then pass csv_header "$want"; else flunk csv_header "got '$(head -1 "$T/p.csv" 2>/dev/null)'"; fi

# 2. sums to 1 per task per image
bad=$(awk -F, 'NR > 1 && $1 == "image" { n++
  d = $5 + $6 + $7 + $8; b = 0; for (k = 9; k <= 15; k++) b += $k; c = $16 + $17
  if ((d - 1)^2 > 1e-8 || (b - 1)^2 > 1e-8 || (c - 1)^2 > 1e-8) bad++ }
  END { printf "%d %d", n, bad + 0 }' "$T/p.csv")
set -- $bad
if [ "$1" = 6 ] && [ "$2" = 0 ]; then pass sums "6 image rows: density, BI-RADS and cancer columns each sum to 1 (within 1e-4)"
else flunk sums "$1 image rows, $2 with a task not summing to 1"; fi

# 3. breast and exam rows against the image rows (mean and max recomputed here)
res=$(awk -F, 'NR == 1 { next }
  $1 == "image" { gb = $3 "|" $4; ge = $3
    for (k = 5; k <= 17; k++) { sb[gb, k] += $k; se[ge, k] += $k
      if (!((gb, k) in mb) || $k > mb[gb, k]) mb[gb, k] = $k
      if (!((ge, k) in me) || $k > me[ge, k]) me[ge, k] = $k }
    nb[gb]++; ne[ge]++; next }
  { key = ($1 ~ /^breast/) ? $3 "|" $4 : $3; rows++
    for (k = 5; k <= 17; k++) {
      want = $1 == "breast_mean" ? sb[key, k] / nb[key] : $1 == "breast_max" ? mb[key, k] : \
             $1 == "exam_mean" ? se[key, k] / ne[key] : me[key, k]
      e = $k - want; if (e < 0) e = -e; if (e > worst) worst = e } }
  END { nbk = 0; for (g in nb) nbk++; nek = 0; for (g in ne) nek++
        printf "%d %d %d %g", rows, nbk, nek, worst + 0 }' "$T/p.csv")
set -- $res
if [ "$1" = $((2 * $2 + 2 * $3)) ] && [ "$3" = 2 ] && awk -v w="$4" 'BEGIN { exit !(w < 5e-6) }'; then
  pass aggregation "$2 breasts and $3 exams, mean and max rows ($1) == recomputed from the image rows, worst $4"
else flunk aggregation "rows $1, breasts $2, exams $3, worst $4"; fi

# 4. probe head: predict --head gives the probe's probabilities
"$MAMA" probe --weights "$T/ckpt.safetensors" --manifest "$M" --task density --classes 2,3,4 --steps 5 --no-augment \
  --save-head "$T/head" --probs "$T/probe" > "$T/probe.log" 2>&1 || flunk probe "$(tail -2 "$T/probe.log")"
PIMGS=$(awk -F, 'NR > 1 { gsub(/"/, "", $1); print $1 }' "$T/probe_density.csv")
"$MAMA" predict --weights "$T/ckpt.safetensors" --head "$T/head_density.safetensors" $PIMGS --manifest "$M" \
  --csv "$T/ph.csv" > "$T/ph.log" 2>&1 || flunk head "$(tail -2 "$T/ph.log")"
res=$(awk -F, 'FNR == 1 { f++; next }
  f == 1 { gsub(/"/, "", $1); p2[$1] = $4; p3[$1] = $5; p4[$1] = $6; next }
  $1 == "image" { gsub(/"/, "", $2); n++
    if (!($2 in p2)) { miss++; next }
    e = ($6 - p2[$2])^2 + ($7 - p3[$2])^2 + ($8 - p4[$2])^2 + $5^2; if (e > worst) worst = e }
  END { printf "%d %d %g", n, miss + 0, sqrt(worst + 0) }' "$T/probe_density.csv" "$T/ph.csv")
set -- $res
if [ "$1" -gt 0 ] && [ "$2" = 0 ] && awk -v w="$3" 'BEGIN { exit !(w < 5e-6) }'; then
  pass head "$1 test images: predict --head density_2..4 == probe --probs, density_1 = 0, worst $3"
else flunk head "images $1, unmatched $2, worst $3"; fi

# 5. --config base with the default tokenizer is refused early
out=$("$MAMA" pretrain --manifest "$M" --out "$T/base.safetensors" --config base 2>&1); rc=$?
if [ $rc = 2 ] && printf '%s' "$out" | grep -q "\-\-tokenizer is required"; then
  pass base_needs_tokenizer "$(printf '%s' "$out" | tail -1)"
else flunk base_needs_tokenizer "status $rc: $out"; fi

[ $fails = 0 ]
