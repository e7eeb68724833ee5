#!/usr/bin/env bash
# A grid sweep as a SLURM array job: one array task (one GPU) per grid point of nkd.sweep.
#
#   launch/slurm_sweep.sh [OPTIONS] -- --flagfile=F --grid=KEY=V1,V2 [--grid=...] [-- RUN FLAGS]
#
# Everything after the first `--` is nkd.sweep's command line (see `python -m nkd.sweep -h`).
# The number of points N comes from `python -m nkd.sweep --count ...`; the job is submitted
# with --array=0-(N-1), and task I runs `python -m nkd.sweep --task_index=I ...`, i.e. one
# nkd.main run in WORKSPACE/sweeps/NAME/<point>/ (its log in log.txt there). A finished point is
# skipped and a preempted one resumes from its checkpoint, so the job is submitted --requeue and
# can simply be submitted again. Collect the results afterwards with
# `python -m nkd.sweep ... --list` or a plain `python -m nkd.sweep ...` (it skips every finished
# point and writes sweep.json). Distillation points share their teachers: each teacher (each
# --teacher_seeds candidate too) is trained once, under its own file lock in the workspace, by
# the first task that needs it, while the others train another candidate or wait; the workspace
# must be on a file system every node sees, with working flock.
#
# Options:
#   --dry-run             print the sbatch command and the script it would submit; submit
#                         nothing (also DRY_RUN=1)
#   --partition=P --account=A --qos=Q
#   --time=HH:MM:SS       per task (default 04:00:00)
#   --gpus-per-task=G     (default 1; 0: none)  --cpus-per-task=C (default 8)  --mem=M (default 32G)
#   --max-concurrent=K    at most K tasks at once (--array=0-(N-1)%K)
#   --job-name=NAME       (default nkd-<flagfile stem>)
#   --log-dir=DIR         SLURM output files (default: REPO/workspace/slurm)
#   --python=PY           Python with nkd's requirements (default: the active venv's, or python3)
#   --sbatch-arg=ARG      any other sbatch option, passed as is (repeatable)
#   -h, --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

time_limit="04:00:00" gpus=1 cpus=8 mem="32G" max_concurrent=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus-per-task=*) gpus="${1#*=}" ;;
    --cpus-per-task=*) cpus="${1#*=}" ;;
    --mem=*) mem="${1#*=}" ;;
    --max-concurrent=*) max_concurrent="${1#*=}" ;;
    --) shift; break ;;
    *) slurm_option "$1" \
         || die "unknown option $1 (nkd.sweep's arguments go after --; see --help)" ;;
  esac
  shift
done
sweep_args=("$@")
[[ ${#sweep_args[@]} -gt 0 ]] || die "no nkd.sweep arguments after --; see --help"
[[ "$gpus" =~ ^[0-9]+$ ]] || die "--gpus-per-task=$gpus: expected an integer >= 0"
[[ -z "$max_concurrent" || "$max_concurrent" =~ ^[1-9][0-9]*$ ]] \
  || die "--max-concurrent=$max_concurrent: expected a positive integer"
python="${python:-$(default_python)}"

# The number of grid points (and a check of the sweep's arguments before anything is queued).
if ! count="$(cd "$NKD_REPO" && "$python" -m nkd.sweep --count "${sweep_args[@]}")"; then
  exit 2  # nkd.sweep printed its one-line error
fi
[[ "$count" =~ ^[0-9]+$ && "$count" -ge 1 ]] || die "nkd.sweep --count printed '$count'"

if [[ -z "$job_name" ]]; then
  stem=""
  for arg in "${sweep_args[@]}"; do
    [[ "$arg" == --flagfile=* ]] && stem="$(basename "${arg#--flagfile=}" .flags)"
    [[ "$arg" == "--" ]] && break
  done
  job_name="nkd-${stem:-sweep}"
fi

array="0-$((count - 1))${max_concurrent:+%$max_concurrent}"
sbatch_cmd=(sbatch "--job-name=$job_name" "--array=$array" "--time=$time_limit")
# --gpus-per-task=0 leaves GPUs out (a CPU partition, or GPUs asked with --sbatch-arg=--gres=...).
[[ "$gpus" != 0 ]] && sbatch_cmd+=("--gpus-per-task=$gpus")
sbatch_cmd+=("--ntasks=1" "--cpus-per-task=$cpus" "--mem=$mem" "--chdir=$NKD_REPO"
             "--output=$log_dir/%x-%A_%a.out" "--requeue" "--signal=B:USR1@120")

# The job script: one grid point per array task.
script="#!/usr/bin/env bash
set -uo pipefail
cd $(shell_quote "$NKD_REPO")
echo \"nkd: array task \${SLURM_ARRAY_TASK_ID} of job \${SLURM_ARRAY_JOB_ID} on \$(hostname)\"
$(requeue_on_signal_lines)
$(shell_join "$python" -m nkd.sweep) --task_index=\"\${SLURM_ARRAY_TASK_ID}\" $(shell_join "${sweep_args[@]}") &
$(wait_and_requeue_lines)"

submit_job "$count grid points -> $count array tasks" "$script" "${sbatch_cmd[@]}"
