#!/usr/bin/env bash
# Scale stress test replication (Axial-DeepLab paper, figure 4) on a CPU, in
# one command: context-token data -> train a small Axial-DeepLab and a
# parameter-matched convolutional Panoptic-DeepLab (same data, steps and
# recipe) -> evaluate both at several input resolutions -> JSON, plot and
# the "## Scale stress test" section of BENCHMARKS.md.
#
#   bash scripts/scale_stress_replication.sh
#
# Needs the package's dependencies (pip install -e .); uses $PYTHON, else
# .venv/bin/python if present, else python3. Work files go under
# runs/scale_stress/ (STRESS_DIR); the report, plot and JSON under
# benchmarks/scale_stress/ (STRESS_OUT); the section into BENCHMARKS.md
# (STRESS_MARKDOWN). STRESS_STEPS overrides the training steps of both
# models (gin default 300), STRESS_RESOLUTIONS the test resolutions.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
  P=$PYTHON
elif [ -x .venv/bin/python ]; then
  P=.venv/bin/python
else
  P=python3
fi
WORK=${STRESS_DIR:-runs/scale_stress}
OUT=${STRESS_OUT:-benchmarks/scale_stress}
MARKDOWN=${STRESS_MARKDOWN:-BENCHMARKS.md}
RESOLUTIONS=${STRESS_RESOLUTIONS:-48,64,96,128,192,256}
NUM_TRAIN=${STRESS_TRAIN_IMAGES:-400}
NUM_VAL=${STRESS_VAL_IMAGES:-48}
export TF_CPP_MIN_LOG_LEVEL=2
start=$(date +%s)
DATA=(--gin_param="train/data.input_path='$WORK/tfrecord/train-*'"
      --gin_param="eval/data.input_path='$WORK/tfrecord/val-*'")
if [ -n "${STRESS_STEPS:-}" ]; then
  DATA+=(--gin_param="trainer.train_steps=$STRESS_STEPS"
         --gin_param="trainer.checkpoint_interval=$STRESS_STEPS"
         --gin_param="trainer.validation_interval=$STRESS_STEPS")
fi

echo "== 1/4 context-token dataset ($NUM_TRAIN train, $NUM_VAL val, 128x128) -> $WORK/tfrecord"
rm -rf "$WORK/raw" "$WORK/tfrecord"
$P -m axial_deeplab_tf.data.context_synthetic --output_dir="$WORK/raw" \
  --num_train="$NUM_TRAIN" --num_val="$NUM_VAL" --image_size=128 --seed=0
for split in train val; do
  $P tools/build_panoptic_data.py --image_dir="$WORK/raw/$split" \
    --panoptic_json="$WORK/raw/annotations/panoptic_$split.json" \
    --panoptic_dir="$WORK/raw/annotations/panoptic_$split" \
    --categories_json="$WORK/raw/categories.json" --split="$split" \
    --dataset_name=context_tokens --label_divisor=256 \
    --output_dir="$WORK/tfrecord" --num_shards=2 --num_workers=2 \
    2>&1 | grep -E ': wrote |^error' || true
done
data_done=$(date +%s)

train() {  # name gin_file
  rm -rf "$WORK/$1"
  local t0
  t0=$(date +%s)
  $P tools/train.py --gin_file="$2" --model_dir="$WORK/$1" --mode=train \
    "${DATA[@]}" 2>&1 | grep --line-buffered -E '^(step|error)' || true
  if [ -z "$(ls "$WORK/$1"/ckpt-*.index 2>/dev/null)" ]; then
    echo "training $1 wrote no checkpoint" >&2
    exit 1
  fi
  echo $(( $(date +%s) - t0 )) > "$WORK/$1.seconds"
}
echo "== 2/4 train Axial-DeepLab (model A) -> $WORK/axial"
train axial gin/stress/axial_deeplab.gin
echo "== 3/4 train convolutional Panoptic-DeepLab (model B) -> $WORK/conv"
train conv gin/stress/panoptic_deeplab_conv.gin

echo "== 4/4 scale stress test at $RESOLUTIONS -> $OUT, $MARKDOWN"
steps=$($P - "$WORK/axial" <<'PYEOF'
import os, re, sys
print(max(int(m.group(1)) for f in os.listdir(sys.argv[1])
          for m in [re.match(r"ckpt-(\d+)\.index$", f)] if m))
PYEOF
)
mkdir -p "$OUT"
NOTES="$WORK/notes.md"
cat > "$NOTES" <<EOF
Paper (figure 4): trained at the standard resolution and tested on whole
images resized to other resolutions, Axial-DeepLab gains about 40% PQ
relative to Panoptic-DeepLab on small inputs and about 30% on very large
ones. This is a small CPU replication of that protocol, not of the COCO
numbers. Data: the context-token set
(\`axial_deeplab_tf/data/context_synthetic.py\`, $NUM_TRAIN training and
$NUM_VAL validation images of 128x128): grey tokens whose class
(warm_token or cool_token) is given only by the color of a banner along a
random image side, at least 15% of the image away from every token.
Model A is Axial-DeepLab on Axial-ResNet-26 x0.25 (span 65); model B the
convolutional Panoptic-DeepLab on a bottleneck ResNet-26 x0.33 with the
same stem, decoders (1x1 projection, no ASPP) and heads
(\`gin/stress/axial_deeplab.gin\`, \`gin/stress/panoptic_deeplab_conv.gin\`).
Both are trained from scratch for $steps steps (batch 8, RAdam +
Lookahead, the Panoptic-DeepLab losses, BN momentum 0.9 for the short
schedule) on 128x128 crops at one scale, with the same data and seeds.
Wall time on this machine (shared with other jobs): data
$(( data_done - start )) s, training A $(cat "$WORK/axial.seconds") s,
training B $(cat "$WORK/conv.seconds") s. One training run per model:
run-to-run spread is not measured. Raw numbers:
\`$OUT/scale_stress.json\`.
EOF
$P tools/scale_stress_test.py \
  --gin_file=gin/stress/axial_deeplab.gin --model_dir="$WORK/axial" \
  --name="Axial-DeepLab" \
  --baseline_gin_file=gin/stress/panoptic_deeplab_conv.gin \
  --baseline_model_dir="$WORK/conv" --baseline_name="Conv-PDL" \
  "${DATA[@]}" --resolutions="$RESOLUTIONS" \
  --output_json="$OUT/scale_stress.json" \
  --output_png="$OUT/scale_stress.png" --markdown_file="$MARKDOWN" \
  --notes_file="$NOTES" --command="bash scripts/scale_stress_replication.sh" \
  2> "$WORK/scale_stress_test.log" || {
    tail -n 30 "$WORK/scale_stress_test.log" >&2
    exit 1
  }
echo "total $(( $(date +%s) - start )) s"
