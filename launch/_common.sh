# Shared by the launch/ scripts (sourced, not run).

# The repository root (the folder above launch/).
NKD_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# One line on stderr, exit 2 (bad input), as nkd.main and nkd.sweep do.
die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# One word quoted for a POSIX shell: as is when it is plain, else in single quotes.
shell_quote() {
  if [[ -n "$1" && "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Words as one shell-quoted line: what a user could paste to run it.
shell_join() {
  local out="" word
  for word in "$@"; do
    out+="$(shell_quote "$word") "
  done
  printf '%s' "${out% }"
}

# The Python to run nkd with: --python, else $NKD_PYTHON, else the active virtual environment's,
# else python3 on the PATH.
default_python() {
  if [[ -n "${NKD_PYTHON:-}" ]]; then
    echo "$NKD_PYTHON"
  elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    echo "$VIRTUAL_ENV/bin/python"
  else
    command -v python3 || echo python3
  fi
}

# Job script lines around the step started in the background (`... &`): preemption and the time
# limit. SLURM sends SIGTERM to every process of a preempted or cancelled job (a preempted one is
# requeued by SLURM itself, thanks to --requeue) and, with --signal=B:USR1@120, SIGUSR1 to this
# script 120 s before the time limit: this script then requeues the job. Either way the runs get
# SIGTERM, finish their step, write a checkpoint at it and exit 75; the requeued job resumes
# there (a finished run or grid point is skipped).
requeue_on_signal_lines() {
  cat <<'LINES'
requeue=0 child=""
trap 'requeue=1; kill -TERM "$child" 2>/dev/null' USR1
trap 'kill -TERM "$child" 2>/dev/null' TERM
LINES
}
wait_and_requeue_lines() {
  cat <<'LINES'
child=$!
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do status=0; wait "$child" || status=$?; done
if [[ "$requeue" == 1 ]]; then
  echo "nkd: time limit near: requeueing job ${SLURM_JOB_ID} (exit $status)"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
LINES
}

# The options both SLURM scripts take, with their defaults (each script sets its own
# time_limit). slurm_option ARG sets the variable ARG names, or fails when ARG is none of them;
# --help prints the script's own usage.
partition="" account="" qos="" job_name="" log_dir="$NKD_REPO/workspace/slurm" python=""
extra_sbatch=()
slurm_option() {
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --partition=*) partition="${1#*=}" ;;
    --account=*) account="${1#*=}" ;;
    --qos=*) qos="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    --job-name=*) job_name="${1#*=}" ;;
    --log-dir=*) log_dir="${1#*=}" ;;
    --python=*) python="${1#*=}" ;;
    --sbatch-arg=*) extra_sbatch+=("${1#*=}") ;;
    -h|--help) usage; exit 0 ;;
    *) return 1 ;;
  esac
}

# submit_job SUMMARY SCRIPT SBATCH...: submits the job script SCRIPT with the sbatch command
# SBATCH... and the options passed on as given (--partition, --account, --qos, every
# --sbatch-arg); with --dry-run prints SUMMARY, that command and SCRIPT instead.
submit_job() {
  local summary="$1" script="$2"
  shift 2
  local cmd=("$@")
  if [[ -n "$partition" ]]; then cmd+=("--partition=$partition"); fi
  if [[ -n "$account" ]]; then cmd+=("--account=$account"); fi
  if [[ -n "$qos" ]]; then cmd+=("--qos=$qos"); fi
  cmd+=("${extra_sbatch[@]}")
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "# $summary (dry run: nothing submitted)"
    echo "$(shell_join "${cmd[@]}") <<'NKD_JOB'"
    echo "$script"
    echo "NKD_JOB"
    exit 0
  fi
  command -v sbatch >/dev/null \
    || die "sbatch not found: run this on a SLURM login node (or --dry-run)"
  mkdir -p "$log_dir"
  "${cmd[@]}" <<<"$script"
}

# DRY_RUN=1 in the environment means --dry-run.
DRY_RUN="${DRY_RUN:-0}"
[[ "$DRY_RUN" == "1" || "$DRY_RUN" == "true" ]] && DRY_RUN=1 || DRY_RUN=0
