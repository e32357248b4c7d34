#!/usr/bin/env bash
# A base that copies, built on a lent GPU (issue 24): the agents' actions are copies (a path, a line, a `def` line, a
# summary) and no base built on this project's CPU copies at all (docs/agent_env.md, "The edit is a copy the tiny base
# cannot make"); small transformers learn to copy (induction) only after far more tokens than a CPU gives. Builds the
# tiny shape (hidden 128, 2 layers: every downstream recipe's cost unchanged) and the mini shape (hidden 256,
# 4 layers) for a fixed time each, half the rows given a repeated span, 1,024-token rows, and writes each base with
# its record (the copy scores at 64, 512 and 1,024 tokens). About 10 minutes on one H200. What comes back (at most 8
# files of 16 MiB): $OUT/<shape>-copy.safetensors.part-NN (the weights cut in 15 MiB parts), $OUT/<shape>-copy.tar
# (the rest of the model directory, its record and log), and $OUT/summary.txt. To rebuild a base directory:
#   tar -xf tiny-copy.tar && cat tiny-copy.safetensors.part-* > tiny-copy/model.safetensors
#   OUT=out SECONDS_EACH=240 bash scripts/device/copy_base.sh        # DEVICE=cpu SECONDS_EACH=5: a dry run here
set -uo pipefail
OUT="${OUT:-out}"
PY="${PYTHON:-python}"
DEVICE="${DEVICE:-cuda}"
EACH="${SECONDS_EACH:-240}"
WORK="${WORK:-/tmp/copy_base}"
mkdir -p "$OUT" "$WORK"
rm -rf "$OUT"/*-copy.tar "$OUT"/*-copy.safetensors.part-* "$OUT/summary.txt" "$WORK"/*-copy*  # no earlier run's files
failed=0
# the mini shape given by its sizes: the mini preset fixes a step count, and these runs are bounded by time
declare -A SHAPE=([tiny]="" [mini]="--hidden 256 --layers 4 --intermediate 768 --lr 2e-3")
for shape in tiny mini; do
  # shellcheck disable=SC2086
  timeout $((EACH + 240)) "$PY" -m icae.scripts.build_tiny_base --preset tiny ${SHAPE[$shape]} --corpus wide \
    --block 1024 --batch 64 --repeats 0.5 --repeat_longest 256 --seconds "$EACH" --eval_every 200 \
    --device "$DEVICE" --out "$WORK/$shape-copy" 2>&1 | grep -v "Token indices" \
    | tee "$WORK/$shape-copy.log" | tail -6
  if [ ! -f "$WORK/$shape-copy/model.safetensors" ]; then
    echo "$shape: the build failed (see $WORK/$shape-copy.log)" | tee -a "$OUT/summary.txt"
    failed=1
  else
    split -b 15m -d "$WORK/$shape-copy/model.safetensors" "$OUT/$shape-copy.safetensors.part-"
    rm "$WORK/$shape-copy/model.safetensors"
    cp "$WORK/$shape-copy.log" "$WORK/$shape-copy/build.log"
    tar -C "$WORK" -cf "$OUT/$shape-copy.tar" "$shape-copy"
  fi
  grep -h "copying at distance" "$WORK/$shape-copy.log" | sed "s/^/$shape: /" >> "$OUT/summary.txt"
done
cat "$OUT/summary.txt"
exit $failed
