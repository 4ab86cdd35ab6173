#!/usr/bin/env bash
# Which MUNIT batch size (and learning rate) makes the best use of CPU time?
#
# Trains the same generator (preset, dataset, instance, seed) in several settings AT THE SAME
# TIME, one thread each, for the same wall-clock budget: by default once at batch 1 (the paper)
# and once at batch 16, both at the paper's lr 1e-4; SETTINGS="BATCH:LR ..." picks others. When
# the budget is up each run gets SIGTERM, which makes it save its state.pt and stop cleanly; then
# `invtransfer generator-quality` measures each against the true transform on held-out images
# (class preservation with a classifier trained on clean data, nuisance diversity,
# reconstruction L1) and one JSON line per run is appended to $OUT_DIR/comparison.jsonl.
#
# Usage: [BUDGET_S=1200] [SETTINGS="1:1e-4 16:1e-4"] [DATASET=fmnist-dil-lt] [INSTANCE=0]
#        [PRESET=configs/generator/fmnist_munit_small.yaml]
#        CLASSIFIER=runs/quality/fmnist-balanced-clean__ce__s0 experiments/generator_batch_comparison.sh [OUT_DIR]
# (the clean classifier: see RESULTS.md, "generators and their quality"; data root from $INVTRANSFER_DATA)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${INVTRANSFER_RUNS:-runs}/batch_comparison}
budget=${BUDGET_S:-1200}
settings=${SETTINGS:-1:1e-4 16:1e-4}
dataset=${DATASET:-fmnist-dil-lt}
instance=${INSTANCE:-0}
preset=${PRESET:-configs/generator/fmnist_munit_small.yaml}
classifier=${CLASSIFIER:?set CLASSIFIER to a classifier run trained on untransformed data}
bin=${INVTRANSFER_BIN:-.venv/bin/invtransfer}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$out"
name_of() { echo "${dataset}__i${instance}__b${1%%:*}_lr${1##*:}"; }
# iterations far beyond the budget; lr_step keeps the paper's halving at 100k images
for st in $settings; do
  b=${st%%:*} lr=${st##*:} name=$(name_of "$st")
  timeout --signal=TERM --kill-after=120 "$budget" "$bin" train-generator "$preset" data.name="$dataset" \
    data.instance="$instance" batch_size="$b" lr="$lr" iterations=1000000 lr_step=$(( 100000 / b )) \
    checkpoint_every=500 sample_every=1000000 log_every=25 out_dir="$out" name="$name" overwrite=true quiet=true \
    > "$out/$name.log" 2>&1 &
done
wait || true
for st in $settings; do
  b=${st%%:*} lr=${st##*:} name=$(name_of "$st")
  q=$("$bin" generator-quality "$out/$name" "$dataset" instance="$instance" --classifier "$classifier" --json)
  python3 - "$b" "$lr" "$budget" "$out/$name" "$q" "$out/$name.log" >> "$out/comparison.jsonl" <<'EOF'
import json, re, sys
b, lr, budget, run, q = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
stop = re.findall(r"at iteration (\d+)/", open(sys.argv[6]).read())  # the SIGTERM message: exact
try:
    lines = [json.loads(x) for x in open(f"{run}/metrics.jsonl") if x.strip()]
except FileNotFoundError:  # stopped before its first log line
    lines = []
it = int(stop[-1]) if stop else (lines[-1]["iteration"] if lines else 0)
print(json.dumps({"batch_size": b, "lr": lr, "budget_s": budget, "iterations": it, "images_seen": it * b,
                  "quality": q}))
EOF
done
cat "$out/comparison.jsonl"
