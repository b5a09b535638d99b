#!/usr/bin/env bash
# One-shot GPU evidence run for a lent, offline GPU machine (docs/DEVICE.md).
#
#   scripts/gpu_evidence.sh OUT              on the GPU machine, with .device-kit/ carried
#   scripts/gpu_evidence.sh --rehearse OUT   the same steps here, on the CPU: GPU-only steps
#                                            are skipped with their reason
#
# Every step runs under its own timeout and the run goes on past a failed step: one broken
# step must not cost the other evidence, on a machine lent for minutes. Everything lands in
# OUT as at most 8 files (the device tool brings back no more): log.txt, steps.tsv,
# summary.md, summary.json and evidence.tar.gz (result files, JSON views, raw logs).
# Exit 0 when every step ended as expected (expected failures included), else 1; 2: usage.
set -uo pipefail

usage() { echo "usage: scripts/gpu_evidence.sh [--rehearse] OUT" >&2; exit 2; }
REHEARSE=0
OUT=""
for arg in "$@"; do
  case "$arg" in
    --rehearse) REHEARSE=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) usage ;;
    *) [ -z "$OUT" ] && OUT="$arg" || usage ;;
  esac
done
[ -n "$OUT" ] || usage

ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT" || { echo "gpu_evidence: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-evidence.XXXXXX")
RESULTS="$WORK/results"
mkdir -p "$RESULTS" "$WORK/views" "$WORK/logs"
LOG="$OUT/log.txt"
STEPS="$OUT/steps.tsv"
: >"$LOG"
printf 'step\texpect\trc\tseconds\toutcome\n' >"$STEPS"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1

log() { echo "gpu_evidence: $*"; }

if [ "$REHEARSE" = 1 ]; then
  PY="${PYTHON:-python3}"
  DEVICE=cpu
  log "rehearsal on $(hostname): CPU only, with this environment's packages"
else
  PY=python3
  DEVICE=cuda
  KIT="$ROOT/.device-kit/wheels"
  SITE="${GPUPROBE_KIT_SITE:-/tmp/gpuprobe-site}"
  [ -d "$KIT" ] || { log "no kit in $KIT: run scripts/device_kit.sh here first and carry .device-kit"; exit 2; }
  log "installing the kit into $SITE (no index, no deps: the kit is closed over the image)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$KIT"/*.whl \
    || { log "kit install failed"; exit 1; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"            # py-spy and ninja
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
GP=("$PY" -m gpuprobe)
FAILED=0

# step NAME EXPECT TIMEOUT CMD...   EXPECT: ok (exit 0), fail (non-zero is the evidence), any
step() {
  local name=$1 expect=$2 limit=$3; shift 3
  local t0 rc outcome
  log "== $name (limit ${limit}s): $*"
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err"
  rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  tail -n 25 "$WORK/logs/$name.out" "$WORK/logs/$name.err" 2>/dev/null | sed 's/^/    /'
  case "$expect:$rc" in
    ok:0|fail:[1-9]*|any:*) outcome=expected ;;
    *:124|*:137) outcome="timed out"; FAILED=1 ;;
    *) outcome=unexpected; FAILED=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$expect" "$rc" "$secs" "$outcome" >>"$STEPS"
  log "== $name: exit $rc in ${secs}s ($outcome)"
}

# skip NAME REASON: a step that cannot run here, said so
skip() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" skip - 0 "skip: $2" >>"$STEPS"
  log "== $1: skip: $2"
}

PWM_BUFFER=(--pin-memory --prefetch 12)    # upstream PWM's Buffer settings
if [ "$REHEARSE" = 1 ]; then
  # one 5M update takes ~a minute on 2 CPU cores and 48M ten times that: the rehearsal proves the
  # script, the stages and the outputs at the trainer's tiny size; the GPU run uses PWM's sizes
  SMALL=tiny LARGE=tiny
  # upstream's update steps the env (dflex_ant, 128 envs): building 128 CPU Ants costs more than
  # the tiny update itself, four times over
  TRAIN_SET=(--set train.num_envs=8)
  log "rehearsal: model sizes 5M and 48M are replaced by tiny, the train stage's 128 envs by 8"
else
  SMALL=5M LARGE=48M
  TRAIN_SET=()
fi

step imports ok 120 "$PY" -c "import gpuprobe, gpuprobe_pwm, torch, dflex.envs, hydra, gym, gymnasium, torchrl, tensordict, urchin; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
step info ok 60 sh -c "\"\$@\" info --json >'$WORK/views/info.json'" _ "${GP[@]}"
if "${GP[@]}" kernels --help >/dev/null 2>&1; then
  step kernels any 120 sh -c "\"\$@\" kernels --json >'$WORK/views/kernels.json'" _ "${GP[@]}"
else
  skip kernels "this checkout has no 'gpuprobe kernels' command"
fi

# dflex's CUDA build: as shipped (compute_50 PTX, which CUDA 13's nvcc refuses: the error is
# the evidence), then with the architecture fixed for this GPU, then its env steps there.
if [ "$DEVICE" = cuda ]; then
  step dflex_build_as_shipped fail 420 "${GP[@]}" run --only --stage sim --device cuda --results "$RESULTS"
  step dflex_build_sm90 ok 420 "${GP[@]}" run --only --stage sim --device cuda --results "$RESULTS" --set sim.dflex_cuda_arch=sm_90
else
  skip dflex_build_as_shipped "no CUDA here: dflex builds CPU kernels only"
  step dflex_build_cpu ok 420 "${GP[@]}" run --only --stage sim --device cpu --results "$RESULTS"
fi

# ${A[@]+"${A[@]}"}: an empty array is an unbound variable under set -u before bash 4.4
step "train_$SMALL" ok 300 "${GP[@]}" run --stage train --device "$DEVICE" --results "$RESULTS" --model-size "$SMALL" "${PWM_BUFFER[@]}" ${TRAIN_SET[@]+"${TRAIN_SET[@]}"}
step "train_${LARGE}_only" ok 300 "${GP[@]}" run --only --stage train --device "$DEVICE" --results "$RESULTS" --model-size "$LARGE" "${PWM_BUFFER[@]}" ${TRAIN_SET[@]+"${TRAIN_SET[@]}"}
if "${GP[@]}" run --help 2>/dev/null | grep -q -- --emulate-gpu; then
  step "train_${SMALL}_as_L40S" ok 300 "${GP[@]}" run --stage train --device "$DEVICE" --results "$RESULTS" --model-size "$SMALL" "${PWM_BUFFER[@]}" ${TRAIN_SET[@]+"${TRAIN_SET[@]}"} --emulate-gpu L40S
  step "train_${LARGE}_only_as_L40S" ok 300 "${GP[@]}" run --only --stage train --device "$DEVICE" --results "$RESULTS" --model-size "$LARGE" "${PWM_BUFFER[@]}" ${TRAIN_SET[@]+"${TRAIN_SET[@]}"} --emulate-gpu L40S
else
  skip "train_${SMALL}_as_L40S" "this checkout's 'gpuprobe run' has no --emulate-gpu"
  skip "train_${LARGE}_only_as_L40S" "this checkout's 'gpuprobe run' has no --emulate-gpu"
fi

# The fire drill: a hang at a CUDA mark, so the evidence path is proven on a process that
# holds a CUDA context (py-spy native frames, NVML per-process memory). Exit 3 is the point.
if [ "$DEVICE" = cuda ]; then
  step drill_cuda_hang fail 120 env GPUPROBE_FAILPOINTS=cuda.mem_get_info=hang \
    "${GP[@]}" run --only --stage cuda --device cuda --timeout 20 --results "$RESULTS"
else
  skip drill_cuda_hang "no CUDA here: the drill needs a process holding a CUDA context"
  step drill_cpu_hang fail 120 env GPUPROBE_FAILPOINTS=alloc.host_memory=hang \
    "${GP[@]}" run --only --stage alloc --device cpu --timeout 8 --results "$RESULTS"
fi

step summary ok 60 "$PY" "$ROOT/scripts/gpu_evidence_summary.py" --results "$RESULTS" --steps "$STEPS" \
  --out "$OUT" $([ "$REHEARSE" = 1 ] && echo --rehearse)
tar -czf "$OUT/evidence.tar.gz" -C "$WORK" results views logs || FAILED=1
rm -rf "$WORK"
log "done: $(ls "$OUT" | tr '\n' ' ')"
exit "$FAILED"
