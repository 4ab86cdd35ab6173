#!/usr/bin/env bash
# The paper's experiments on the real data (the reproduction issue), in priority order, through
# experiments/protocols.py: every run has a fixed name under $OUT, finished runs are skipped and
# interrupted ones resumed, so re-running this script continues where it stopped. GIT runs start
# from their plain twin's checkpoint at GIT's first epoch (identical result, fewer epochs).
#
#   1. Fashion-MNIST synthetic nuisances (resnet20, 50 epochs): DIL and BG x instances 0-2 x
#      {CE+DRS, CE+DRS+GIT, oracle}, one small-preset generator per instance and transform; ROT x
#      instances 0-2 x {CE, CE+DRS}; and GIT on ROT once (instance 0, --git-on-rot).
#   2. CIFAR-10-LT (rho 100, resnet32, 200 epochs): CE+DRS and CE+DRS+GIT, paper-architecture
#      generator (configs/generator/cifar10_munit.yaml: 140k images, the paper's budget, by
#      default; CIFAR_GEN_ITERATIONS=N at batch 16 for a smaller one).
#   3. GTSRB-LT (our documented split): CE+DRS and CE+DRS+GIT, the same generator preset without
#      flips (configs/generator/gtsrb_munit.yaml).
# Then one report of everything: $OUT/report/report.md.
#
# Usage: [DRY_RUN=1] [ITEMS="1 2 3"] [JOBS=2] [CPUS_PER_JOB=1] [OUT=$INVTRANSFER_RUNS/protocols] [CIFAR_GEN_ITERATIONS=8750]
#        [GEN_CHECKPOINT_EVERY=1000]
#        experiments/reproduce_paper.sh
# (data root from $INVTRANSFER_DATA; on a 2-core machine keep OMP_NUM_THREADS=1 and JOBS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${OUT:-${INVTRANSFER_RUNS:-runs}/protocols}
jobs=${JOBS:-2}
cpus=${CPUS_PER_JOB:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cpus}
dry=(); [[ -n "${DRY_RUN:-}" ]] && dry=(--dry-run)  # print the commands only
drive() { "$py" experiments/protocols.py "$@" --out "$out" --executor local --jobs "$jobs" --cpus-per-job "$cpus" \
  "${dry[@]}"; }
small=configs/generator/fmnist_munit_small.yaml
gen_over=()
[[ -n "${CIFAR_GEN_ITERATIONS:-}" ]] && gen_over+=("iterations=$CIFAR_GEN_ITERATIONS")
# on a CPU an iteration of the paper MUNIT takes seconds: checkpoint more often than the preset's
# 1000 so that an interrupted session loses minutes, not hours (a resume-free key)
[[ -n "${GEN_CHECKPOINT_EVERY:-}" ]] && gen_over+=("checkpoint_every=$GEN_CHECKPOINT_EVERY")
gen_set=(); (( ${#gen_over[@]} )) && gen_set=(--set-generator "${gen_over[@]}")
status=0
for item in ${ITEMS:-1 2 3}; do
  case $item in
    1) drive synthetic --transforms dil bg --methods ce_drs ce_drs_git oracle --generator-config "$small" || status=1
       # GIT on ROT first, so that its CE+DRS twin (instance 0) keeps the checkpoint it starts from
       drive synthetic --transforms rot --instances 0 --methods ce_drs ce_drs_git --git-on-rot \
         --generator-config "$small" || status=1
       drive synthetic --transforms rot --methods ce ce_drs || status=1 ;;
    2) drive cifar --dataset cifar10-lt --methods ce_drs ce_drs_git "${gen_set[@]}" || status=1 ;;
    3) drive cifar --dataset gtsrb-lt --methods ce_drs ce_drs_git "${gen_set[@]}" || status=1 ;;
    *) echo "error: ITEMS may hold 1, 2 and 3 (got '$item')" >&2; exit 2 ;;
  esac
done
[[ -n "${DRY_RUN:-}" ]] || "$py" -m invtransfer report "$out" --out "$out/report"
exit $status
