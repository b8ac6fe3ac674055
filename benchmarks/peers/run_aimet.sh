#!/usr/bin/env bash
# AIMET-ONNX peer baseline on CIFAR-10 ResNet-20/56, end to end.
#
#   bash benchmarks/peers/run_aimet.sh [VENV] [WORK]
#
# VENV (default /work/venvs/aimet): a venv with aimet-onnx; created if missing, as:
#   python -m venv VENV
#   VENV/bin/pip install torch==2.13.0            # first: the local CPU wheel
#   VENV/bin/pip install -c constraints 'aimet-onnx==2.42.*'   # constraints: torch==2.13.0, torchvision==0.28.0
#   VENV/bin/pip uninstall -y <every nvidia-* / triton package it pulled in>
# WORK (default /work/peer_runs): scratch folder outside the repo (models, calibration .npy,
#   AIMET's QDQ exports and its summary JSON).
# FAAQ_DATA_DIR (default ../shared/data next to the repo): the real data.
# OUT_NAME (default aimet_cifar): results go to benchmarks/out/OUT_NAME.{json,md}.
# CALIB_SEED (default 0): which 256-image calibration draw (faaq's --seed); use its own WORK per seed.
# AIMET_ARGS: passed to aimet_cifar.py (default "--threads 1 --ort-threads 1": on a busy 2-core machine
#   torch's and ORT's 2-thread pools oversubscribe the cores and AdaRound slows 5-50x per layer;
#   see aimet_cifar.py --help for --variants, --adaround-iters, --amp-drops, --resume).
#
# Steps: 1) faaq exports the float models; 2) faaq's loader writes the 256 calibration images;
# 3) AIMET (in VENV, no faaq there) quantizes and exports QDQ ONNX; 4) faaq's evaluator scores
# them and writes benchmarks/out/aimet_cifar.{json,md}.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${1:-/work/venvs/aimet}"
WORK="${2:-/work/peer_runs}"
export FAAQ_DATA_DIR="${FAAQ_DATA_DIR:-$REPO/../shared/data}"
PY="${PYTHON:-python}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.13.0
  cons="$(mktemp)"; printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$cons"
  "$VENV/bin/pip" install -c "$cons" 'aimet-onnx==2.42.*'
  rm -f "$cons"
  extra="$("$VENV/bin/pip" list --format=freeze 2>/dev/null | cut -d= -f1 | grep -iE '^(nvidia-|triton)' || true)"
  if [ -n "$extra" ]; then "$VENV/bin/pip" uninstall -y $extra; fi
fi
"$VENV/bin/python" -c "import aimet_onnx; print('aimet_onnx', aimet_onnx.__version__)"

mkdir -p "$WORK"
echo "== 1-2) export float models + calibration set (system python, faaq)"
for m in resnet20:resnet20-12fca82f.th resnet56:resnet56-4bfd9763.th; do
  stem="${m%%:*}"; ckpt="${m#*:}"
  [ -f "$WORK/$stem.onnx" ] || faaq export "$stem-cifar10" --weights "$FAAQ_DATA_DIR/cifar10/$ckpt" -o "$WORK/$stem.onnx"
done
"$PY" "$HERE/aimet_eval.py" prepare --work "$WORK" --seed "${CALIB_SEED:-0}"

echo "== 3) AIMET quantization (venv $VENV)"
TIMEV=()
if [ -x /usr/bin/time ]; then TIMEV=(/usr/bin/time -v -o "$WORK/aimet_time.txt"); fi
# shellcheck disable=SC2086
"${TIMEV[@]}" "$VENV/bin/python" "$HERE/aimet_cifar.py" --work "$WORK" ${AIMET_ARGS:---threads 1 --ort-threads 1} 2>&1 | tee "$WORK/aimet_run.log" \
  | grep -vE 'Adjusted weight scale|UserWarning|warnings.warn|^\s*$'
[ -f "$WORK/aimet_time.txt" ] && grep -E 'Elapsed|Maximum resident' "$WORK/aimet_time.txt" || true

echo "== 4) evaluation with faaq's evaluator (system python)"
"$PY" "$HERE/aimet_eval.py" evaluate --work "$WORK" --out-name "${OUT_NAME:-aimet_cifar}"
