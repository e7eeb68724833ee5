#!/usr/bin/env bash
# One large nkd.main run over several nodes: a SLURM batch job whose srun step starts one
# process per GPU on every node, each `python -m nkd.main --distributed ...`.
#
#   launch/slurm_multinode.sh [OPTIONS] -- --flagfile=F [--flag=value ...]
#
# Everything after `--` is nkd.main's flags (paths relative to the repository root). With
# --distributed, nkd.main calls jax.distributed.initialize() first, which reads the SLURM
# environment (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID):
# the coordinator is the first node, and task I of a node uses GPU SLURM_LOCALID. For that the
# tasks must all see every GPU of their node: GPUs are requested per node (--gpus-per-node),
# never bound per task (no --gpus-per-task / --gpu-bind). The global --batch_size is split over
# all nodes x GPUs (it must divide evenly). The workspace (checkpoints, the shared teacher) must
# be on a file system every node sees. A resubmitted job resumes from the last checkpoint.
#
# Options:
#   --dry-run             print the sbatch command and the script it would submit; submit
#                         nothing (also DRY_RUN=1)
#   --nodes=N             (default 2)
#   --gpus-per-node=G     processes (one per GPU) per node (default 8)
#   --cpus-per-task=C     (default 8)
#   --partition=P --account=A --qos=Q --time=HH:MM:SS (default 12:00:00)
#   --job-name=NAME       (default nkd-<flagfile stem>-<N>x<G>)
#   --log-dir=DIR         SLURM output files (default: REPO/workspace/slurm)
#   --python=PY           Python with nkd's requirements (default: the active venv's, or python3)
#   --sbatch-arg=ARG      any other sbatch option, passed as is (repeatable)
#   -h, --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

nodes=2 gpus=8 cpus=8 time_limit="12:00:00"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --gpus-per-node=*) gpus="${1#*=}" ;;
    --cpus-per-task=*) cpus="${1#*=}" ;;
    --) shift; break ;;
    *) slurm_option "$1" || die "unknown option $1 (nkd.main's flags go after --; see --help)" ;;
  esac
  shift
done
run_flags=("$@")
[[ ${#run_flags[@]} -gt 0 ]] || die "no nkd.main flags after --; see --help"
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes=$nodes: expected a positive integer"
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node=$gpus: expected a positive integer"
for flag in "${run_flags[@]}"; do
  [[ "$flag" == --* ]] || die "nkd.main flag '$flag': expected --FLAG=VALUE"
  [[ "$flag" == --distributed || "$flag" == --nodistributed ]] \
    && die "$flag: this script passes --distributed itself"
done
python="${python:-$(default_python)}"

# Check the flags here, before anything waits in a queue: a valid config whose global batch
# splits evenly over every GPU.
(cd "$NKD_REPO" && "$python" - "$((nodes * gpus))" "${run_flags[@]}" <<'PY'
import sys
from absl import flags
from nkd import config as config_lib
from nkd.errors import NkdError
processes, argv = int(sys.argv[1]), ["nkd", *sys.argv[2:]]
fv = flags.FlagValues()
config_lib.define_flags(fv)
try:
  fv(argv)
  config = config_lib.from_flags(fv, argv)
except (flags.Error, NkdError) as e:
  sys.exit(f"slurm_multinode.sh: error: {e}")
if config.batch_size % processes:
  sys.exit(f"slurm_multinode.sh: error: --batch_size={config.batch_size} does not split over "
           f"{processes} GPUs")
PY
) || exit 2

stem="run"
for flag in "${run_flags[@]}"; do
  [[ "$flag" == --flagfile=* ]] && stem="$(basename "${flag#--flagfile=}" .flags)"
done
job_name="${job_name:-nkd-$stem-${nodes}x$gpus}"

sbatch_cmd=(sbatch "--job-name=$job_name" "--nodes=$nodes" "--ntasks-per-node=$gpus"
            "--gpus-per-node=$gpus" "--cpus-per-task=$cpus" "--time=$time_limit"
            "--chdir=$NKD_REPO" "--output=$log_dir/%x-%j.out" "--requeue"
            "--signal=B:USR1@120")

script="#!/usr/bin/env bash
set -uo pipefail
cd $(shell_quote "$NKD_REPO")
echo \"nkd: job \${SLURM_JOB_ID}: \${SLURM_NNODES} nodes (\${SLURM_JOB_NODELIST}), \${SLURM_NTASKS} processes\"
$(requeue_on_signal_lines)
# One process per GPU; every task sees all GPUs of its node and JAX picks GPU SLURM_LOCALID.
srun --kill-on-bad-exit=1 --ntasks=$((nodes * gpus)) --ntasks-per-node=$gpus \\
  $(shell_join "$python" -m nkd.main --distributed "${run_flags[@]}") &
$(wait_and_requeue_lines)"

submit_job "$nodes node(s) x $gpus GPU(s): $((nodes * gpus)) processes" "$script" \
  "${sbatch_cmd[@]}"
