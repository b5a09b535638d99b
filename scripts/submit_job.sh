#!/usr/bin/env bash
# Submit PWM training to SLURM behind gpuprobe's preflight gate.
#
# The job asks `gpuprobe preflight` first; on a node known to be incompatible (exit 4)
# or in a transient state (exit 75) it stops before building anything, exits with
# preflight's code, and prints what to tell the scheduler. Every path in the job is
# absolute and baked in at submission (the checkout, the python, the logs): a job
# starts with another cwd and often another PATH than the shell that submitted it.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: submit_job.sh [OPTIONS] single ALG ENV SEED [-- HYDRA_OVERRIDES...]
       submit_job.sh [OPTIONS] sweep  ALG ENV SEED [SEED...] [-- HYDRA_OVERRIDES...]

Submits `python -m gpuprobe_pwm.train alg=ALG env=ENV general.seed=SEED` as an sbatch job that
runs `gpuprobe preflight` first. `sweep` submits one job array, one task per seed.
Prints the job id on stdout; everything else goes to stderr.

Options (environment variable in brackets):
  -p, --partition P       partition [SUBMIT_PARTITION]; default: the cluster's default
  -t, --time T            time limit, sbatch syntax [SUBMIT_TIME, 04:00:00]
  -g, --gpus N            GPUs per job, --gres=gpu:N; 0 asks for none [SUBMIT_GPUS, 1]
  -c, --cpus N            CPUs per task [SUBMIT_CPUS, 8]
      --mem M             memory, sbatch syntax [SUBMIT_MEM]; default: the partition's
  -x, --exclude NODES     nodes to avoid, e.g. gpu[03-04] [SUBMIT_EXCLUDE]
  -O, --override KEY=VAL  extra Hydra override (repeatable) [SUBMIT_OVERRIDES, space-separated]
  -l, --log-dir DIR       job logs and the submitted script [SUBMIT_LOG_DIR, <checkout>/logs/slurm]
  -r, --results DIR       gpuprobe results folder, the evidence preflight reads
                          [GPUPROBE_RESULTS; default: reports/ of the checkout]
      --preflight MODE    enforce: stop on exit 4/75 (default); warn: report and train anyway;
                          off: no preflight [SUBMIT_PREFLIGHT]
      --preflight-arg A   extra argument to gpuprobe preflight (repeatable),
                          e.g. --preflight-arg=--strict [SUBMIT_PREFLIGHT_ARGS, space-separated]
      --resubmit-elsewhere  on exit 4/75, submit this job again excluding this node (and the
                          ones excluded before), at most SUBMIT_MAX_RESUBMITS (3) times
                          [SUBMIT_RESUBMIT_ELSEWHERE=1]
      --watch MODE        run the trainer under `gpuprobe watch`: evidence (default) records a stall
                          (no output, no change in the stacks) as a result file and keeps training;
                          kill records it and ends the job (exit 3); off runs the trainer bare
                          [SUBMIT_WATCH]
      --no-watch          same as --watch off
      --watch-stall D     stall window for watch, e.g. 900, 15m, 1h [SUBMIT_WATCH_STALL, 15m]
  -e, --env NAME=VALUE    export NAME=VALUE inside the job (repeatable)
      --sbatch-arg ARG    extra sbatch option, e.g. --sbatch-arg=--account=proj (repeatable)
      --python PATH       the python to run [PYTHON; default: python3 on PATH]
  -n, --dry-run           print the batch script; submit nothing
  -h, --help              this help

Exit codes inside the job: preflight's (4 known incompatible, 75 transient or no evidence
with --strict, 2 preflight could not run), else the trainer's (3 when --watch kill ended it).

Examples:
  ./scripts/submit_job.sh single pwm_5M cartpole_swingup 42
  ./scripts/submit_job.sh -p l40s -t 12:00:00 sweep pwm_48M dflex_ant 1 2 3
  ./scripts/submit_job.sh --dry-run single pwm_tiny pendulum 0 -- general.device=cuda
EOF
}

die() { echo "submit_job.sh: $*" >&2; exit 2; }

abs_dir() {  # create, then print the absolute physical path
  mkdir -p -- "$1" && (cd -- "$1" && pwd -P)
}

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
PARTITION=${SUBMIT_PARTITION:-}
TIME_LIMIT=${SUBMIT_TIME:-04:00:00}
GPUS=${SUBMIT_GPUS:-1}
CPUS=${SUBMIT_CPUS:-8}
MEM=${SUBMIT_MEM:-}
EXCLUDE=${SUBMIT_EXCLUDE:-}
LOG_DIR=${SUBMIT_LOG_DIR:-$ROOT/logs/slurm}
RESULTS=${GPUPROBE_RESULTS:-}
PREFLIGHT=${SUBMIT_PREFLIGHT:-enforce}
RESUBMIT=${SUBMIT_RESUBMIT_ELSEWHERE:-0}
MAX_RESUBMITS=${SUBMIT_MAX_RESUBMITS:-3}
PYTHON_BIN=${PYTHON:-}
WATCH=${SUBMIT_WATCH:-evidence}
WATCH_STALL=${SUBMIT_WATCH_STALL:-15m}
DRY_RUN=0
read -r -a OVERRIDES <<<"${SUBMIT_OVERRIDES:-}"
read -r -a PREFLIGHT_ARGS <<<"${SUBMIT_PREFLIGHT_ARGS:-}"
JOB_ENV=()
SBATCH_EXTRA=()
POSITIONAL=()

need() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    -p|--partition) need "$@"; PARTITION=$2; shift 2 ;;
    -t|--time) need "$@"; TIME_LIMIT=$2; shift 2 ;;
    -g|--gpus) need "$@"; GPUS=$2; shift 2 ;;
    -c|--cpus) need "$@"; CPUS=$2; shift 2 ;;
    --mem) need "$@"; MEM=$2; shift 2 ;;
    -x|--exclude) need "$@"; EXCLUDE=$2; shift 2 ;;
    -O|--override) need "$@"; OVERRIDES+=("$2"); shift 2 ;;
    -l|--log-dir) need "$@"; LOG_DIR=$2; shift 2 ;;
    -r|--results) need "$@"; RESULTS=$2; shift 2 ;;
    --preflight) need "$@"; PREFLIGHT=$2; shift 2 ;;
    --preflight-arg) need "$@"; PREFLIGHT_ARGS+=("$2"); shift 2 ;;
    --preflight-arg=*) PREFLIGHT_ARGS+=("${1#*=}"); shift ;;
    --resubmit-elsewhere) RESUBMIT=1; shift ;;
    --watch) need "$@"; WATCH=$2; shift 2 ;;
    --no-watch) WATCH=off; shift ;;
    --watch-stall) need "$@"; WATCH_STALL=$2; shift 2 ;;
    -e|--env) need "$@"; JOB_ENV+=("$2"); shift 2 ;;
    --sbatch-arg) need "$@"; SBATCH_EXTRA+=("$2"); shift 2 ;;
    --sbatch-arg=*) SBATCH_EXTRA+=("${1#*=}"); shift ;;
    --python) need "$@"; PYTHON_BIN=$2; shift 2 ;;
    -n|--dry-run) DRY_RUN=1; shift ;;
    --) shift; OVERRIDES+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done

[[ ${#POSITIONAL[@]} -ge 4 ]] || { usage >&2; die "need MODE ALG ENV SEED"; }
MODE=${POSITIONAL[0]} ALG=${POSITIONAL[1]} ENV_NAME=${POSITIONAL[2]}
SEEDS=("${POSITIONAL[@]:3}")
case $MODE in
  single) [[ ${#SEEDS[@]} -eq 1 ]] || die "single takes one SEED (use sweep for several)" ;;
  sweep) ;;
  *) die "unknown mode '$MODE' (single or sweep)" ;;
esac
for s in "${SEEDS[@]}"; do [[ $s =~ ^[0-9]+$ ]] || die "seed '$s' is not a non-negative integer"; done
[[ $GPUS =~ ^[0-9]+$ ]] || die "--gpus '$GPUS' is not a count"
[[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "--cpus '$CPUS' is not a count"
[[ $MAX_RESUBMITS =~ ^[0-9]+$ ]] || die "SUBMIT_MAX_RESUBMITS '$MAX_RESUBMITS' is not a count"
case $PREFLIGHT in enforce|warn|off) ;; *) die "--preflight '$PREFLIGHT' is not enforce, warn or off" ;; esac
case $WATCH in evidence|kill|off) ;; *) die "--watch '$WATCH' is not evidence, kill or off" ;; esac
[[ $WATCH_STALL =~ ^([0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?[smh])+)$ ]] || die "--watch-stall '$WATCH_STALL' is not a duration like 900, 15m or 1h30m"
for kv in "${JOB_ENV[@]}"; do [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$kv' is not NAME=VALUE"; done

# The interpreter the job runs: the real one, not a pyenv/conda shim that needs this shell's state.
if [[ -z $PYTHON_BIN ]]; then
  PYTHON_BIN=$(command -v python3 || command -v python || true)
fi
[[ -n $PYTHON_BIN ]] || die "no python on PATH (give --python or PYTHON=...)"
PY=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON_BIN" -c \
  'import sys, gpuprobe, gpuprobe_pwm; print(sys.executable)' 2>/dev/null) \
  || die "$PYTHON_BIN cannot import gpuprobe and gpuprobe_pwm from $ROOT (install the checkout, or give --python)"

if [[ $DRY_RUN -eq 1 ]]; then
  # a dry run creates nothing: resolve the folders without making them
  LOG_DIR=$(realpath -m -- "$LOG_DIR")
  [[ -z $RESULTS ]] || RESULTS=$(realpath -m -- "$RESULTS")
else
  LOG_DIR=$(abs_dir "$LOG_DIR") || die "cannot create log folder $LOG_DIR"
  [[ -z $RESULTS ]] || RESULTS=$(abs_dir "$RESULTS") || die "cannot create results folder $RESULTS"
fi

# The trainer has its own preflight gate; when this job was told to warn or skip, say the same to it.
if [[ $PREFLIGHT != enforce ]] && grep -Eq '^[[:space:]]+preflight:' "$ROOT/gpuprobe_pwm/config/config.yaml" 2>/dev/null; then
  OVERRIDES+=("general.preflight=$PREFLIGHT")
fi

NAME="pwm-${ALG}-${ENV_NAME}"
q() { printf '%q' "$1"; }
qa() { local out="" a; for a in "$@"; do out+=" $(q "$a")"; done; printf '%s' "${out# }"; }

render() {
  echo "#!/bin/bash"
  echo "#SBATCH --job-name=$(q "$NAME")"
  echo "#SBATCH --chdir=$(q "$LOG_DIR")"
  echo "#SBATCH --time=$(q "$TIME_LIMIT")"
  echo "#SBATCH --cpus-per-task=$CPUS"
  echo "#SBATCH --ntasks=1"
  if [[ $MODE == sweep ]]; then
    echo "#SBATCH --array=0-$((${#SEEDS[@]} - 1))"
    echo "#SBATCH --output=$(q "$LOG_DIR")/%x-%A_%a.out"
  else
    echo "#SBATCH --output=$(q "$LOG_DIR")/%x-%j.out"
  fi
  [[ -z $PARTITION ]] || echo "#SBATCH --partition=$(q "$PARTITION")"
  [[ $GPUS -eq 0 ]] || echo "#SBATCH --gres=gpu:$GPUS"
  [[ -z $MEM ]] || echo "#SBATCH --mem=$(q "$MEM")"
  [[ -z $EXCLUDE ]] || echo "#SBATCH --exclude=$(q "$EXCLUDE")"
  local a; for a in "${SBATCH_EXTRA[@]}"; do echo "#SBATCH $(q "$a")"; done
  cat <<EOF
# written by scripts/submit_job.sh; every path below is absolute on purpose
set -euo pipefail
ROOT=$(q "$ROOT")
PY=$(q "$PY")
PREFLIGHT=$(q "$PREFLIGHT")
WATCH=$(q "$WATCH")
WATCH_STALL=$(q "$WATCH_STALL")
SCRIPT=$(q "$SCRIPT")
EXCLUDE=$(q "$EXCLUDE")
RESUBMIT=$RESUBMIT
MAX_RESUBMITS=$MAX_RESUBMITS
SEEDS=($(qa "${SEEDS[@]}"))
PREFLIGHT_ARGS=($(qa "${PREFLIGHT_ARGS[@]}"))
OVERRIDES=($(qa "${OVERRIDES[@]}"))
export PYTHONPATH="\$ROOT\${PYTHONPATH:+:\$PYTHONPATH}"
EOF
  [[ -z $RESULTS ]] || echo "export GPUPROBE_RESULTS=$(q "$RESULTS")"
  for a in "${JOB_ENV[@]}"; do echo "export $(q "${a%%=*}")=$(q "${a#*=}")"; done
  cat <<EOF
SEED=\${SEEDS[\${SLURM_ARRAY_TASK_ID:-0}]}
NODE=\${SLURMD_NODENAME:-\$(hostname -s)}
JOB=\${SLURM_JOB_ID:-none}
echo "submit_job: job \$JOB on \$NODE: $(q "$ALG") $(q "$ENV_NAME") seed \$SEED (resubmit \${SUBMIT_RESUBMITS:-0})"

resubmit_elsewhere() {
  # A running job's ExcNodeList cannot be changed (only a pending one's), so a requeue would
  # land on this node again: submit the same script anew, excluding every node seen bad so far.
  local excl n args
  excl="\${EXCLUDE:+\$EXCLUDE,}\${SUBMIT_EXCLUDED:+\$SUBMIT_EXCLUDED,}\$NODE"
  n=\$((\${SUBMIT_RESUBMITS:-0} + 1))
  args=(--parsable --exclude="\$excl" --export="ALL,SUBMIT_EXCLUDED=\$excl,SUBMIT_RESUBMITS=\$n")
  [[ -z \${SLURM_ARRAY_TASK_ID:-} ]] || args+=(--array="\$SLURM_ARRAY_TASK_ID")
  sbatch "\${args[@]}" "\$SCRIPT"
}

if [[ \$PREFLIGHT != off ]]; then
  rc=0
  "\$PY" -m gpuprobe preflight "\${PREFLIGHT_ARGS[@]}" || rc=\$?
  echo "submit_job: gpuprobe preflight exit \$rc on \$NODE"
  if [[ \$rc -ne 0 && \$PREFLIGHT == warn ]]; then
    echo "submit_job: --preflight warn: training anyway"
  elif [[ \$rc -eq 4 || \$rc -eq 75 ]]; then
    [[ \$rc -eq 4 ]] && why="is known to be incompatible with this stack" || why="cannot run this job now (transient, or no evidence with --strict)"
    echo "submit_job: not training: node \$NODE \$why (gpuprobe preflight exit \$rc)."
    echo "submit_job: hint: resubmit avoiding the node: sbatch --exclude=\$NODE \$SCRIPT (or submit_job.sh --exclude \$NODE ...)"
    echo "submit_job: hint: a plain 'scontrol requeue \$JOB' may land here again; a PENDING job can be steered: scontrol update JobId=<id> ExcNodeList=\$NODE"
    [[ \$rc -eq 4 ]] && echo "submit_job: hint: admins: scontrol update NodeName=\$NODE State=DRAIN Reason='gpuprobe: known incompatible'"
    if [[ \$RESUBMIT -eq 1 && \${SUBMIT_RESUBMITS:-0} -lt \$MAX_RESUBMITS ]]; then
      if new=\$(resubmit_elsewhere); then
        echo "submit_job: resubmitted as job \${new%%;*} excluding \$NODE"
      else
        echo "submit_job: resubmitting failed; resubmit by hand (hint above)"
      fi
    elif [[ \$RESUBMIT -eq 1 ]]; then
      echo "submit_job: not resubmitting: already resubmitted \$MAX_RESUBMITS times"
    fi
    exit "\$rc"
  elif [[ \$rc -ne 0 ]]; then
    echo "submit_job: not training: gpuprobe preflight could not decide (exit \$rc); see its message above"
    exit "\$rc"
  fi
fi

TRAIN=("\$PY" -m gpuprobe_pwm.train alg=$(q "$ALG") env=$(q "$ENV_NAME") general.seed="\$SEED" "\${OVERRIDES[@]}")
echo "submit_job: training: \${TRAIN[*]}"
if [[ \$WATCH == off ]]; then
  exec "\${TRAIN[@]}"
fi
# a stall (no output, no change in the stacks for WATCH_STALL) leaves evidence in the results folder
echo "submit_job: under gpuprobe watch --stall \$WATCH_STALL --on-stall \$WATCH (submit_job.sh --no-watch runs it bare)"
exec "\$PY" -m gpuprobe watch --stall "\$WATCH_STALL" --on-stall "\$WATCH" -- "\${TRAIN[@]}"
EOF
}

# the script is kept beside the logs: it is the record of what ran, and what a resubmission reuses
SCRIPT="$LOG_DIR/$NAME-$(date -u +%Y%m%dT%H%M%SZ)-$$.sbatch"
if [[ $DRY_RUN -eq 1 ]]; then
  render
  exit 0
fi

command -v sbatch >/dev/null 2>&1 || die "sbatch not found on PATH: submit from a node with the SLURM client commands"
render >"$SCRIPT"
out=$(sbatch --parsable "$SCRIPT") || die "sbatch refused the job (script kept: $SCRIPT)"
JOB_ID=${out%%;*}
echo "submit_job: submitted $MODE $ALG $ENV_NAME seeds ${SEEDS[*]} as job $JOB_ID; logs in $LOG_DIR" >&2
echo "$JOB_ID"
