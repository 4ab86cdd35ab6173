#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.sh carries to the GPU machine, in the repository root (both
# folders are git-ignored; name them in the run tool's `carry`):
#
#   .whl/       wheels for CPython 3.12 on manylinux x86_64 of what that machine's Python lacks:
#               kornia, kornia_rs, pyyaml, tqdm, matplotlib and matplotlib's pure dependencies, at
#               the versions installed here (so the GPU runs the code the tests ran; unpinned
#               when not installed here), downloaded with pip (a registry must be reachable);
#   .gpu_data/  CIFAR-10 in its 32 MB npz form and materialize_cifar10.py, copied from a data
#               root (gpu_check.sh writes the official binary batches from them on the machine);
#
# then prints their sizes against the run tool's 64 MiB carry limit (exit 1 when over).
#
#   benchmarks/prepare_gpu_carry.sh DATA_ROOT        # e.g. /work/shared/data
#   INVTRANSFER_DATA=DATA_ROOT benchmarks/prepare_gpu_carry.sh
#   EXTRA_WHEELS="numpy pillow scipy" benchmarks/prepare_gpu_carry.sh DATA_ROOT   # a machine without them
#
# Environment: PYTHON (python3: runs pip, and its installed versions pin the wheels), WHEEL_PYTHON
# (3.12), WHEEL_PLATFORM (manylinux2014_x86_64), EXTRA_WHEELS (""), SKIP_WHEELS=1 / SKIP_DATA=1
# (keep that folder as it is), CARRY_LIMIT_MIB (64).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIMIT_MIB=${CARRY_LIMIT_MIB:-64}
PACKAGES=(kornia kornia_rs pyyaml tqdm matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil
          six packaging)
read -r -a EXTRA <<< "${EXTRA_WHEELS:-}"

if [[ ${SKIP_WHEELS:-0} != 1 ]]; then
  # name==version of each package as installed for $PY (name alone where it is not installed)
  mapfile -t SPECS < <("$PY" - "${PACKAGES[@]}" "${EXTRA[@]}" <<'EOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
EOF
  )
  rm -rf .whl.tmp
  echo "downloading wheels for CPython ${WHEEL_PYTHON:-3.12} on ${WHEEL_PLATFORM:-manylinux2014_x86_64}: ${SPECS[*]}"
  for spec in "${SPECS[@]}"; do
    # the installed version, else (no such wheel for that Python and platform) the newest that has one
    for want in "$spec" "${spec%%==*}"; do
      if "$PY" -m pip download -q --disable-pip-version-check --python-version "${WHEEL_PYTHON:-3.12}" \
          --platform "${WHEEL_PLATFORM:-manylinux2014_x86_64}" --only-binary=:all: --no-deps -d .whl.tmp "$want" \
          > .whl.log 2>&1; then
        [[ $want == "$spec" ]] || echo "  $spec: no such wheel, took the newest $want"
        continue 2
      fi
    done
    cat .whl.log >&2
    rm -rf .whl.tmp .whl.log
    echo "error: pip download of $spec failed (no registry reachable?); .whl/ left as it was" >&2
    exit 1
  done
  rm -f .whl.log
  rm -rf .whl && mv .whl.tmp .whl
fi

if [[ ${SKIP_DATA:-0} != 1 ]]; then
  ROOT=${1:-${INVTRANSFER_DATA:-}}
  [[ -n $ROOT ]] || { echo "error: give the data root (the folder with materialize_cifar10.py and cifar10_*.npz) as argument or in \$INVTRANSFER_DATA" >&2; exit 2; }
  FILES=("$ROOT/materialize_cifar10.py" "$ROOT/cifar10_jpeg_fallback.npz" "$ROOT/cifar10_lossless_subset.npz")
  for f in "${FILES[@]}"; do
    [[ -f $f ]] || { echo "error: $f not found; expected CIFAR-10's npz form (materialize_cifar10.py and its two npz files) in $ROOT" >&2; exit 2; }
  done
  rm -rf .gpu_data && mkdir -p .gpu_data
  cp "${FILES[@]}" .gpu_data/
fi

bytes() { du -sb "$1" 2> /dev/null | cut -f1 || echo 0; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
whl=$( [[ -d .whl ]] && bytes .whl || echo 0 )
data=$( [[ -d .gpu_data ]] && bytes .gpu_data || echo 0 )
total=$(( whl + data ))
echo ".whl/       $(mib "$whl")  ($(ls .whl/*.whl 2> /dev/null | wc -l) wheels)"
echo ".gpu_data/  $(mib "$data")  ($(ls .gpu_data 2> /dev/null | tr '\n' ' '))"
echo "total       $(mib "$total") of the ${LIMIT_MIB} MiB carry limit"
if (( total > LIMIT_MIB * 1048576 )); then
  echo "error: over the carry limit" >&2
  exit 1
fi
tree=$(git ls-files -z 2> /dev/null | xargs -0 du -cb 2> /dev/null | tail -n 1 | cut -f1 || true)
if [[ -n $tree ]]; then  # the working tree travels too; should the limit count it, this is the sum
  over=""
  (( total + tree <= LIMIT_MIB * 1048576 )) || over=" (over the limit, should it count them)"
  echo "with the working tree's tracked files ($(mib "$tree")): $(mib $(( total + tree )))$over"
fi
echo "carry: run(carry=[\".whl\", \".gpu_data\"], command=\"OUT=\$OUT bash benchmarks/gpu_check.sh\")"
