#!/usr/bin/env bash
# GPU check: the whole CIFAR-10-LT pipeline at the paper's settings on one H200-class GPU, < 10 min.
#
#   OUT=/path/to/out benchmarks/gpu_check.sh                 # on the GPU machine ($OUT is collected)
#   GPU_CHECK_TINY=1 OUT=/tmp/x benchmarks/gpu_check.sh      # tiny CPU smoke test (tests/test_gpu_check.py)
#
# Steps (each logged, timed and summarised in $OUT/gpu_check.json, log in $OUT/gpu_check.log):
#  1. Python packages: wheels carried in $GPU_CHECK_WHEELS (.whl/) are installed into
#     $GPU_CHECK_WORK/site, then PYTHONPATH=that:src (the package runs from src/, nothing is
#     downloaded); what is still missing is named and the script stops.
#  2. CIFAR-10 from $GPU_CHECK_DATA (default .gpu_data): either cifar-10-batches-bin/ (official
#     binary batches, 184 MB) or the development copy's materialize_cifar10.py with its two npz
#     files (32 MB; the binary batches are then written to $GPU_CHECK_WORK/data), and the
#     CIFAR-10-LT dataset is built once (rho 100, 12,406 training images).
#  3. MUNIT, paper architecture (configs/generator/cifar10_munit.yaml) at batch GEN_BATCH (64) for
#     ceil(140000 / GEN_BATCH) iterations: the 140k images per stream of the paper's CIFAR
#     generator (its batch size was 1); the learning rate still halves at 100k images and stays at
#     the preset's 4e-4 (checked at batch 16 on a CPU; the sqrt rule would give 8e-4 at batch 64). At the same
#     time, on the same GPU, CE+DRS for 200 epochs (configs/cifar10_lt/ce_drs.yaml).
#  4. Once the generator is done, CE+DRS+GIT for 200 epochs (ce_drs_git.yaml) with it, starting from
#     CE+DRS's checkpoint after epoch E1 + 1 = 161 (init_from; identical to training from scratch).
#  Defaults of the configs: bf16 autocast, channels_last, data resident on the GPU, no compile
#  (compiling ResNet-32 costs about as much as it saves over 200 short epochs). Every run gets
#  SIGTERM when the time limit (GPU_CHECK_LIMIT_S, 560 s) is near: it saves a checkpoint and the
#  JSON then reports how far it got.
#
# Preparing the carried files, once, on a machine with network: benchmarks/prepare_gpu_carry.sh
# DATA_ROOT (or $INVTRANSFER_DATA) writes .whl/ and .gpu_data/ and prints their sizes against the
# run tool's 64 MiB carry limit. By hand (from the repository root; both are git-ignored, so name
# them in the run tool's `carry`):
#   python3 -m pip download --python-version 3.12 --platform manylinux2014_x86_64 \
#       --only-binary=:all: --no-deps -d .whl kornia kornia_rs pyyaml tqdm matplotlib contourpy \
#       cycler fonttools kiwisolver pyparsing python-dateutil six packaging
#   (add numpy / pillow / scipy if the machine lacks them; torch comes with the machine)
#   mkdir -p .gpu_data && cp /work/shared/data/{materialize_cifar10.py,cifar10_*.npz} .gpu_data/
#   # or: python3 /work/shared/data/materialize_cifar10.py .gpu_data   (cifar-10-batches-bin/, 184 MB:
#   #     over the run tool's 64 MiB carry limit, so carry the 32 MB npz form instead)
#
# Tiny mode (GPU_CHECK_TINY=1): tiny training settings; data from GPU_CHECK_DATA when it is set
# (the real-data code path, with a tiny long-tailed profile), else a tiny synthetic CIFAR-shaped
# npz; carried wheels only when GPU_CHECK_WHEELS is set (else the environment it is given).
# GPU_CHECK_UNTIL=packages or data stops after that step (exit 0; tests of steps 1 and 2).
#
# Environment: OUT (required), PYTHON (python3), GPU_CHECK_DATA (.gpu_data), GPU_CHECK_WHEELS
# (.whl), GPU_CHECK_WORK (/tmp/gpu_check), GEN_BATCH (64), EPOCHS (200), GPU_CHECK_LIMIT_S (560),
# GPU_CHECK_TINY (0), GPU_CHECK_UNTIL (all).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the results}"
PY=${PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
DATA=${GPU_CHECK_DATA:-.gpu_data}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
UNTIL=${GPU_CHECK_UNTIL:-all}
GEN_BATCH=${GEN_BATCH:-64}
EPOCHS=${EPOCHS:-200}
LIMIT=${GPU_CHECK_LIMIT_S:-560}
T0=$(date +%s)
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
left() { local s=$(( LIMIT - ($(date +%s) - T0) )); echo $(( s > 1 ? s : 1 )); }

# 1. packages (the tiny mode uses the environment it is given, unless GPU_CHECK_WHEELS is set)
if [[ $TINY != 1 || -n ${GPU_CHECK_WHEELS:-} ]] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  say "installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels into $WORK/site"
  rm -rf "$WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" "$WHEELS"/*.whl >> "$LOG" 2>&1 \
    || { say "wheel install failed"; exit 1; }
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export INVTRANSFER_CACHE="$WORK/cache"
missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "numpy", "yaml", "kornia", "tqdm", "matplotlib", "scipy", "PIL")
               if importlib.util.find_spec(m) is None))
EOF
)
[[ -z $missing ]] || { say "missing Python packages: $missing (carry their wheels in $WHEELS/, see the header)"; exit 1; }
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee -a "$LOG"
[[ $UNTIL == packages ]] && { say "packages ready (GPU_CHECK_UNTIL=packages)"; exit 0; }

# 2. data
if [[ $TINY == 1 && -z ${GPU_CHECK_DATA:-} ]]; then
  # A tiny CIFAR-shaped set (10 classes of 32x32 RGB) as generic npz; the same code path.
  "$PY" - "$WORK/tiny_cifar.npz" <<'EOF'
import sys, numpy as np
rng = np.random.default_rng(0)
y = np.repeat(np.arange(10), 40); yt = np.repeat(np.arange(10), 5)
x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
x[:, :, :, 0] = (y[:, None, None] * 25).astype(np.uint8)  # a class signal in the red channel
xt = rng.integers(0, 256, (len(yt), 32, 32, 3), dtype=np.uint8)
xt[:, :, :, 0] = (yt[:, None, None] * 25).astype(np.uint8)
np.savez(sys.argv[1], x_train=x, y_train=y, x_test=xt, y_test=yt)
EOF
  DATA_ARGS=(data.source=npz "data.npz_file=$WORK/tiny_cifar.npz")
else
  if [[ -d $DATA/cifar-10-batches-bin ]]; then
    root=$DATA
  elif [[ -f $DATA/materialize_cifar10.py ]]; then
    root=$WORK/data
    if [[ ! -f $root/cifar-10-batches-bin/test_batch.bin ]]; then
      say "writing CIFAR-10 binary batches to $root"
      "$PY" "$DATA/materialize_cifar10.py" "$root" >> "$LOG" 2>&1 || { say "materialize_cifar10.py failed"; exit 1; }
    fi
  else
    say "no CIFAR-10 in $DATA (expected cifar-10-batches-bin/ or materialize_cifar10.py + npz; see the header)"
    exit 1
  fi
  DATA_ARGS=("data.data_root=$root")
fi
if [[ $TINY == 1 ]]; then
  DATA_ARGS+=(data.profile=list "data.counts=[20,15,12,10,8,6,5,4,3,3]")
  CLS_ARGS=(model=resnet20 optim.epochs=2 optim.batch_size=16 optim.warmup_epochs=0 optim.decay1_epoch=0
            optim.decay2_epoch=1 eval_batch_size=64)
  GEN_ARGS=(iterations=3 batch_size=4 arch.width=8 arch.n_res=1 arch.mlp_dim=16 arch.disc_width=8 log_every=1)
else
  iters=$(( (140000 + GEN_BATCH - 1) / GEN_BATCH ))
  CLS_ARGS=("optim.epochs=$EPOCHS")
  GEN_ARGS=("batch_size=$GEN_BATCH" "iterations=$iters" "lr_step=$(( 100000 / GEN_BATCH ))"
            checkpoint_every=500 sample_every=1000 log_every=50)
fi
say "building CIFAR-10-LT"
"$PY" -m invtransfer data cifar10-lt "${DATA_ARGS[@]#data.}" --json > "$WORK/dataset.json" 2>> "$LOG" \
  || { say "dataset build failed"; exit 1; }
if [[ $UNTIL == data ]]; then
  cp "$WORK/dataset.json" "$OUT/dataset.json"
  say "CIFAR-10-LT built from ${DATA_ARGS[*]} (GPU_CHECK_UNTIL=data)"
  exit 0
fi

# 3. and 4. training runs (SIGTERM near the time limit: they checkpoint and stop)
RUNS=$WORK/runs
rm -rf "$RUNS"
run_bg() {  # name, invtransfer arguments...
  local name=$1; shift
  (
    s=$(date +%s)
    timeout --signal=TERM --kill-after=20 "$(left)" "$PY" -m invtransfer "$@" out_dir="$RUNS" name="$name" \
      quiet=true > "$WORK/$name.log" 2>&1
    echo "{\"rc\": $?, \"start_s\": $(( s - T0 )), \"end_s\": $(( $(date +%s) - T0 ))}" > "$WORK/$name.time.json"
  ) &
}
# GIT's first epoch (0-based; E1 + 1): CE+DRS keeps its checkpoint there and CE+DRS+GIT starts from
# it (init_from; the same weights as training it from scratch), so the epochs the two share are trained once.
FORK=$("$PY" -c 'import sys; from invtransfer.config import load_config; from invtransfer.train.classifier import TrainConfig
print(load_config(TrainConfig, sys.argv[1], sys.argv[2:]).git_start)' configs/cifar10_lt/ce_drs_git.yaml \
  "${DATA_ARGS[@]}" "${CLS_ARGS[@]}" git.generator=x 2>> "$LOG") || { say "cannot read the GIT presets"; exit 1; }
say "training the generator (${GEN_ARGS[*]}) and CE+DRS at the same time (CE+DRS keeps its epoch-$FORK checkpoint)"
run_bg generator train-generator configs/generator/cifar10_munit.yaml "${DATA_ARGS[@]}" "${GEN_ARGS[@]}"
gen_pid=$!
run_bg ce_drs train configs/cifar10_lt/ce_drs.yaml "${DATA_ARGS[@]}" "${CLS_ARGS[@]}" "keep_checkpoints=[$FORK]"
cls_pid=$!
wait $gen_pid
say "generator: $(cat "$WORK/generator.time.json")"
if [[ -f $RUNS/generator/generator.pt ]]; then
  fork_ck=$RUNS/ce_drs/checkpoint_e$FORK.pt  # written atomically: once it exists it is complete
  while [[ ! -f $fork_ck ]] && kill -0 $cls_pid 2> /dev/null; do sleep 1; done
  FROM=()
  if [[ -f $fork_ck ]]; then
    FROM=("init_from=$fork_ck"); say "training CE+DRS+GIT from CE+DRS's checkpoint after epoch $FORK"
  else
    say "training CE+DRS+GIT from scratch (CE+DRS stopped before epoch $FORK)"
  fi
  run_bg ce_drs_git train configs/cifar10_lt/ce_drs_git.yaml "${DATA_ARGS[@]}" "${CLS_ARGS[@]}" \
    "git.generator=$RUNS/generator" "${FROM[@]}"
  git_pid=$!
  wait $git_pid
  say "CE+DRS+GIT: $(cat "$WORK/ce_drs_git.time.json")"
else
  say "no generator.pt: CE+DRS+GIT skipped"
fi
wait $cls_pid
say "CE+DRS: $(cat "$WORK/ce_drs.time.json")"

# Summary
for f in generator ce_drs ce_drs_git; do
  [[ -f $WORK/$f.log ]] && { echo "----- $f.log (tail)" >> "$LOG"; tail -n 30 "$WORK/$f.log" >> "$LOG"; }
  mkdir -p "$OUT/$f"
  for g in results.json metrics.jsonl summary.json config.yaml samples_final.png curves.png; do
    [[ -f $RUNS/$f/$g ]] && cp "$RUNS/$f/$g" "$OUT/$f/"
  done
done
"$PY" - "$WORK" "$RUNS" "$OUT/gpu_check.json" "$TINY" "$(( $(date +%s) - T0 ))" <<'EOF' | tee -a "$LOG"
import json, os, statistics, sys
import torch
work, runs, dest, tiny, wall = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
def load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
def lines(path):
    try:
        with open(path) as fh:
            return [json.loads(x) for x in fh if x.strip()]
    except (OSError, ValueError):
        return []
out = {"tiny": tiny, "wall_time_s": wall, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
       "torch": torch.__version__, "dataset": load(os.path.join(work, "dataset.json")), "runs": {},
       "published_test_error": {"CE+DRS+GIT": 21.24, "CE": 29.64, "LDAM-DRW": 22.97}}
for name in ("generator", "ce_drs", "ce_drs_git"):
    t = load(os.path.join(work, f"{name}.time.json"))
    metrics = lines(os.path.join(runs, name, "metrics.jsonl"))
    r = {"timing": t, "finished": False}
    if name == "generator":
        s = load(os.path.join(runs, name, "summary.json"))
        r.update(finished=s is not None, iterations=(s or {}).get("iterations") or (metrics[-1]["iteration"] if metrics else 0),
                 images_seen=(s or {}).get("images_seen"), batch_size=(s or {}).get("batch_size"),
                 images_per_s_median=statistics.median([m["images_per_s"] for m in metrics]) if metrics else None,
                 last_losses={k: v for k, v in (metrics[-1] if metrics else {}).items() if k.startswith("loss")})
    else:
        res = load(os.path.join(runs, name, "results.json"))
        r.update(finished=res is not None, epochs_done=len(metrics),
                 test_error=(res or {}).get("test_error"), test_balanced_accuracy=(res or {}).get("test_balanced_accuracy"),
                 many_medium_few=[(res or {}).get(k) for k in ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")],
                 selected=(res or {}).get("selected_weights"), started_from=(res or {}).get("started_from"),
                 images_per_s_median=statistics.median([m["images_per_s"] for m in metrics]) if metrics else None,
                 epoch_time_s_median=statistics.median([m["epoch_time_s"] for m in metrics]) if metrics else None,
                 git_epochs=sum(1 for m in metrics if m.get("git")), generated=sum(m.get("generated", 0) for m in metrics))
    out["runs"][name] = r
out["ok"] = all(out["runs"][n]["finished"] for n in out["runs"])
with open(dest, "w") as fh:
    json.dump(out, fh, indent=2)
print(json.dumps({n: {k: v for k, v in r.items() if k in ("finished", "test_error", "epochs_done", "iterations",
                                                           "images_per_s_median", "timing")}
                  for n, r in out["runs"].items()}, indent=1))
print(f"ok={out['ok']} wall {wall} s; details in {dest}")
sys.exit(0 if out["ok"] else 1)
EOF
