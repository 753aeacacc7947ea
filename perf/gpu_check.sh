#!/usr/bin/env bash
# The GPU check of issue 21, one script (under 8 minutes on one H200; the CPU halves in about 2 minutes on 2 cores):
#   perf/gpu_check.sh [--out FILE] [--challenge] [--no-install] [--goals] [--step-timeout SECONDS]
# On a GPU: installs pyproject's [gpu] extra (and torch's CUDA build) when the package index is reachable, else
# says which accelerated runtimes are missing; then the simulator on the GPU, the evaluation of an ONNX, a Keras
# and a torch.export submission in the sandbox on CUDA at 100,000 lens-ground cut-outs against the bare runtimes,
# the Ray executor, and with --challenge the lens ResNet trained at the challenge profile (perf/gpu_train.py).
# Without a GPU: says so in one line and runs the CPU halves at small sizes (what CI runs).
# Every figure goes, with the device and the date, into FILE (default perf/gpu_check.out, git-ignored) as Markdown
# for perf/RESULTS.md. Any failed check: exit 1 with one line saying which. --goals: a throughput goal missed
# (evaluate / bare < 0.8) fails too. --no-install: use what is installed. Installing changes this environment
# (onnxruntime is replaced by onnxruntime-gpu): meant for a throw-away GPU machine. --step-timeout: stop a check
# that runs longer (a failed check; the next one runs), so that a time-limited machine reports every check.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=perf/gpu_check.out
CHALLENGE=0
INSTALL=1
GOALS=()
STEP_TIMEOUT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --challenge) CHALLENGE=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --goals) GOALS=(--min-ratio 0.8); shift ;;
    --step-timeout) STEP_TIMEOUT=$2; shift 2 ;;
    *) echo "gpu_check: unknown option $1 (see the top of $0)" >&2; exit 2 ;;
  esac
done
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
export SKYBENCH_ROOT=$ROOT PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=2
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
LOGDIR=$(mktemp -d)
trap 'rm -rf "$LOGDIR"' EXIT
FAILS=()
START=$SECONDS

# step NAME CMD...: run CMD, its output to the terminal and to a log; a non-zero exit is a failed check, named by
# the last FAIL line it printed (else its last line)
step() {
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  if [ "$STEP_TIMEOUT" -gt 0 ]; then
    timeout --kill-after=10 "$STEP_TIMEOUT" "$@" 2>&1 | tee "$LOGDIR/$name.log"
  else
    "$@" 2>&1 | tee "$LOGDIR/$name.log"
  fi
  local rc=${PIPESTATUS[0]}
  if [ "$STEP_TIMEOUT" -gt 0 ] && { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; }; then
    echo "FAIL: stopped after --step-timeout $STEP_TIMEOUT s" >> "$LOGDIR/$name.log"
  fi
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  if [ "$rc" -ne 0 ]; then
    local why
    why=$(grep -h '^FAIL' "$LOGDIR/$name.log" | tail -n 1)
    [ -n "$why" ] || why=$(grep -v '^\s*$' "$LOGDIR/$name.log" | tail -n 1)
    FAILS+=("$name: exit $rc: ${why:-no output}")
  fi
  return 0
}

# the GPU: nvidia-smi lists one, or an NVIDIA device node and torch sees CUDA
GPU_NAME=""
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU_NAME=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "$(v=${CUDA_VISIBLE_DEVICES:-0}; echo "${v%%,*}")" | head -n 1)
elif compgen -G "/dev/nvidia[0-9]*" >/dev/null; then
  GPU_NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' \
    2>/dev/null)
fi
CPU_NAME=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

mkdir -p "$(dirname "$OUT")"
{
  echo "### perf/gpu_check.sh on ${GPU_NAME:-a machine without a GPU}, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Device: ${GPU_NAME:-none}; CPU: $CPU_NAME x $(nproc); commit $COMMIT; Python $("$PY" -c 'import sys; print(sys.version.split()[0])')."
  echo
} > "$OUT"

if [ -z "$GPU_NAME" ]; then
  echo "gpu_check: no GPU on this machine (nvidia-smi finds none): running the CPU halves at small sizes"
  echo "No GPU on this machine: the CPU halves at small sizes (what CI runs)." >> "$OUT"
  echo >> "$OUT"
  # the GPU path's code (torch, Philox, whole simulate calls writing shards) on the CPU
  SIM_ARGS=(--backend torch-cpu --generator philox --objects 64 --rounds 2 --rss-objects 0 --release-objects 100)
  step sim "$PY" perf/sim_throughput.py "${SIM_ARGS[@]}"
  step eval "$PY" perf/gpu_eval.py --size 300 --md "$OUT" "${GOALS[@]}"
  if [ "$CHALLENGE" = 1 ]; then
    step challenge "$PY" perf/gpu_train.py --test 300 --epochs 1 --md "$OUT"
  fi
else
  echo "gpu_check: GPU: $GPU_NAME"
  if [ "$INSTALL" = 1 ]; then
    # [gpu]'s requirements (pyproject.toml), downloaded first so that a failure leaves onnxruntime in place
    mapfile -t REQS < <("$PY" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"], sep="\n")')
    TORCH_VERSION=$(grep -m1 '^torch==' requirements/lock.txt | sed 's/^torch==\([^ +]*\).*/\1/')
    TORCH_CUDA_INDEX=${TORCH_CUDA_INDEX:-}  # e.g. https://download.pytorch.org/whl/cu128 where it is reachable
    WHEELS=$(mktemp -d)
    if timeout 30 "$PY" -m pip index versions onnxruntime-gpu >"$LOGDIR/pip.log" 2>&1 \
        && timeout 300 "$PY" -m pip download --quiet -d "$WHEELS" "${REQS[@]}" >>"$LOGDIR/pip.log" 2>&1; then
      echo "gpu_check: installing ${REQS[*]}"
      "$PY" -m pip uninstall --quiet -y onnxruntime >/dev/null 2>&1
      if ! "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "${REQS[@]}"; then
        FAILS+=("install: pip install ${REQS[*]} failed (see pip's output above)")
        "$PY" -m pip install --quiet "$(grep -m1 -o '^onnxruntime==[^ ]*' requirements/lock.txt)"  # put it back
      fi
      if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        # the installed CPU build (2.13.0+cpu) satisfies torch==2.13.0, so a plain install does nothing: download
        # the CUDA build first (PyPI's Linux torch is one; TORCH_CUDA_INDEX names another index), then swap
        TORCH_WHEELS=$(mktemp -d)
        if timeout 600 "$PY" -m pip download --quiet -d "$TORCH_WHEELS" \
            ${TORCH_CUDA_INDEX:+--index-url "$TORCH_CUDA_INDEX"} "torch==$TORCH_VERSION" >>"$LOGDIR/pip.log" 2>&1; then
          "$PY" -m pip uninstall --quiet -y torch >/dev/null 2>&1
          "$PY" -m pip install --quiet --no-index --find-links "$TORCH_WHEELS" "torch==$TORCH_VERSION" \
            || FAILS+=("install: torch==$TORCH_VERSION (CUDA build) did not install: torch is gone, see pip's output")
        else
          echo "gpu_check: torch's CUDA build could not be downloaded (${TORCH_CUDA_INDEX:-PyPI}); see $LOGDIR/pip.log"
        fi
        rm -rf "$TORCH_WHEELS"
      fi
    else
      echo "gpu_check: the package index is not reachable (or lacks ${REQS[*]}): using what is installed"
      echo "The package index was not reachable: no [gpu] extra installed; using what the machine has." >> "$OUT"
      echo >> "$OUT"
    fi
    rm -rf "$WHEELS"
  fi
  MISSING=$("$PY" - <<'EOF'
missing = []
try:
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        missing.append("onnxruntime-gpu (onnxruntime has no CUDAExecutionProvider)")
except ImportError:
    missing.append("onnxruntime-gpu (no onnxruntime)")
try:
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        missing.append("tensorflow[and-cuda] (TensorFlow sees no GPU)")
except ImportError:
    missing.append("tensorflow[and-cuda] (no TensorFlow)")
try:
    import torch
    if not torch.cuda.is_available():
        missing.append("torch's CUDA build (torch sees no GPU)")
except ImportError:
    missing.append("torch's CUDA build (no torch)")
print("; ".join(missing))
EOF
)
  if [ -n "$MISSING" ]; then
    echo "gpu_check: accelerated runtimes missing: $MISSING"
    { echo "Accelerated runtimes missing (their checks are skipped): $MISSING."; echo; } >> "$OUT"
  fi
  # goals: >= 100,000 lens-space and >= 25,000 lens-ground cut-outs/s for whole simulate calls writing shards; sized
  # to about 45 s on an H200 (session 24; 100,000 per track ran past 160 s before its fixes: perf/RESULTS.md)
  SIM_ARGS=(--backend torch-cuda --generator philox --objects 4096 --rounds 4 --rss-objects 0 --release-objects 50000)
  step sim "$PY" perf/sim_throughput.py "${SIM_ARGS[@]}"
  step eval "$PY" perf/gpu_eval.py --size 100000 --compare 2000 --expect-device cuda --md "$OUT" "${GOALS[@]}"
  if [ "$CHALLENGE" = 1 ]; then
    # the whole challenge profile (20,000 / 2,000 / 100,000), training stopped after the epoch past 150 s (about 22
    # of its 60 epochs on an H200, session 26), then the ONNX model on every core (onnxruntime's CPU build where
    # there is no onnxruntime-gpu); the model and its test metrics next to FILE; a GPU host without cgroup
    # controllers evaluates with rlimits
    step challenge env OMP_NUM_THREADS="$(nproc)" "$PY" perf/gpu_train.py --time-limit 150 --expect-device cuda \
      --allow-rlimits --md "$OUT" --keep "$(dirname "$OUT")/challenge-resnet"
  fi
fi

{
  echo "Simulator: \`python perf/sim_throughput.py ${SIM_ARGS[*]}\`"
  echo
  echo '```'
  sed -n '/images\/s/,/peak RSS/p' "$LOGDIR/sim.log" | grep . || echo "(no figures: it failed)"
  echo '```'
  echo
  echo "Whole script: $((SECONDS - START)) s."
  for f in "${FAILS[@]}"; do echo; echo "FAILED: $f"; done
} >> "$OUT"
echo "gpu_check: figures in $OUT ($((SECONDS - START)) s)"
if [ ${#FAILS[@]} -gt 0 ]; then
  echo "gpu_check: FAILED: ${FAILS[0]}${FAILS[1]:+ (and $((${#FAILS[@]} - 1)) more, see $OUT)}" >&2
  exit 1
fi
echo "gpu_check: all checks passed"
