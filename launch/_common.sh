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

# DRY_RUN=1 in the environment means --dry-run.
DRY_RUN="${DRY_RUN:-0}"
[[ "$DRY_RUN" == "1" || "$DRY_RUN" == "true" ]] && DRY_RUN=1 || DRY_RUN=0
