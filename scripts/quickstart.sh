#!/usr/bin/env bash
# The quickstart: synthetic panoptic data in COCO format -> converter ->
# training -> evaluation -> SavedModel -> predictions, on a CPU.
# Creates .venv (if needed) and installs the package. Everything is written
# under runs/quickstart/ (override with QUICKSTART_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${QUICKSTART_DIR:-runs/quickstart}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
P=.venv/bin/python
CLI=.venv/bin/axial-deeplab
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python scripts/check_venv.py
start=$(date +%s)

echo "== 1/6 synthetic COCO-panoptic dataset -> $OUT/raw"
$CLI make-synthetic --output_dir="$OUT/raw" \
  --num_train="${QUICKSTART_TRAIN_IMAGES:-400}" \
  --num_val="${QUICKSTART_VAL_IMAGES:-50}" --image_size=128 --seed=0

echo "== 2/6 convert to TFRecords -> $OUT/tfrecord"
for split in train val; do
  $CLI build-data panoptic --image_dir="$OUT/raw/$split" \
    --panoptic_json="$OUT/raw/annotations/panoptic_$split.json" \
    --panoptic_dir="$OUT/raw/annotations/panoptic_$split" \
    --categories_json="$OUT/raw/categories.json" --split="$split" \
    --dataset_name=synthetic_shapes --label_divisor=256 \
    --output_dir="$OUT/tfrecord" --num_shards=4 --num_workers=2
done

echo "== 3/6 train + evaluate (PQ / SQ / RQ / AP / mIoU) -> $OUT/model"
rm -rf "$OUT/model"
$CLI train --gin_file=quickstart/axial_deeplab \
  --model_dir="$OUT/model" --mode=train_and_eval \
  --gin_param="train/data.input_path='$OUT/tfrecord/train-*'" \
  --gin_param="eval/data.input_path='$OUT/tfrecord/val-*'" \
  ${QUICKSTART_GIN_PARAMS:-}

echo "== 4/6 export a SavedModel -> $OUT/saved_model"
rm -rf "$OUT/saved_model"
$CLI export --gin_file=quickstart/axial_deeplab \
  --gin_param="train/data.input_path='$OUT/tfrecord/train-*'" \
  --gin_param="eval/data.input_path='$OUT/tfrecord/val-*'" \
  --checkpoint_path="$OUT/model" --export_dir="$OUT/saved_model"

echo "== 5/6 predict held-out images -> $OUT/predictions"
rm -rf "$OUT/predictions"
$CLI predict --saved_model="$OUT/saved_model" \
  --images="$OUT/raw/val/*.png" --output_dir="$OUT/predictions"

echo "== 6/6 results"
$P - "$OUT" "$start" <<'PYEOF'
import json, os, sys, time
out, start = sys.argv[1], int(sys.argv[2])
r = json.load(open(os.path.join(out, "model", "eval_results.json")))
keys = ["panoptic_quality", "panoptic_quality/sq", "panoptic_quality/rq",
        "panoptic_quality/pq_th", "panoptic_quality/pq_st", "instance_ap",
        "mean_iou"]
for k in keys:
  if k in r:
    print(f"  {k:28s} {r[k]:.4f}")
n = len([f for f in os.listdir(os.path.join(out, "predictions", "overlays"))
         if f.endswith(".png")]) if os.path.isdir(os.path.join(out, "predictions", "overlays")) else 0
print(f"  prediction PNGs written      {n} in {out}/predictions")
print(f"  total time                   {time.time() - start:.0f} s")
PYEOF
