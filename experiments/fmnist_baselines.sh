#!/usr/bin/env bash
# CE and CE+DRS on Fashion-MNIST-DIL-LT (resnet20, 50 epochs, the K49 schedule), seeds 0-2.
# Resumable: a finished run (results.json) is skipped, an interrupted one is resumed.
# Usage: [SEEDS="0 1 2"] [METHODS="ce ce_drs"] [EXTRA="key=value ..."] experiments/fmnist_baselines.sh [DATASET] [OUT_DIR]
# (EXTRA: more overrides for every run, e.g. EXTRA=select=val for best-validation model selection)
# (data root from $INVTRANSFER_DATA; on 2 cores two drivers with OMP_NUM_THREADS=1 beat one with 2)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:-fmnist-dil-lt}
out=${2:-${INVTRANSFER_RUNS:-runs}/baselines}
bin=${INVTRANSFER_BIN:-.venv/bin/invtransfer}
for seed in ${SEEDS:-0 1 2}; do
  for method in ${METHODS:-ce ce_drs}; do
    name="${dataset}__${method}__s${seed}"
    if [[ -f "$out/$name/results.json" ]]; then echo "skip $name (done)"; continue; fi
    resume=false; [[ -f "$out/$name/checkpoint.pt" ]] && resume=true
    [[ -d "$out/$name" && $resume == false ]] && rm -rf "${out:?}/$name"
    echo "run $name (resume=$resume)"
    "$bin" train "configs/fmnist_lt/$method.yaml" data.name="$dataset" seed="$seed" \
      out_dir="$out" name="$name" resume=$resume quiet=true ${EXTRA:-}
  done
done
