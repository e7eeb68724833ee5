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

# DRY_RUN=1 in the environment means --dry-run.
DRY_RUN="${DRY_RUN:-0}"
[[ "$DRY_RUN" == "1" || "$DRY_RUN" == "true" ]] && DRY_RUN=1 || DRY_RUN=0
