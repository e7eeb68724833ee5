#!/usr/bin/env bash
# One nkd.main run on a Cloud TPU VM (a single host or every host of a pod slice), over ssh with
# `gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`.
#
#   launch/tpu_vm.sh --tpu=NAME --zone=ZONE [OPTIONS] -- --flagfile=F [--flag=value ...]
#
# Everything after `--` is nkd.main's flags. Every worker runs
#   cd REPO_DIR && PYTHON -m nkd.main --distributed FLAGS
# and jax.distributed.initialize() finds the other hosts of the slice from the TPU metadata.
# One process holds all of a host's chips, so there is no per-chip process and no --parallel
# sweep on a TPU: sweep points run one after another (`--module=nkd.sweep`). On a multi-host
# slice the workspace must be on storage every worker sees (e.g. a Filestore/NFS mount given
# as --workspace) for the checkpoints and the shared teacher.
#
# Options:
#   --dry-run          print the gcloud commands; run nothing (also DRY_RUN=1)
#   --tpu=NAME         the TPU VM (required)          --zone=ZONE (required)
#   --project=P        gcloud project (default: gcloud's configured one)
#   --repo-dir=DIR     checkout on the workers (default: nkd, i.e. ~/nkd)
#   --python=PY        Python on the workers (default: .venv/bin/python inside --repo-dir)
#   --sync             first copy this checkout's HEAD (git archive) to every worker
#   --setup            first create REPO_DIR/.venv with requirements.txt and jax[tpu]
#   --background       run under nohup, output in REPO_DIR/tpu_run.log; return at once
#   --module=M         nkd.main (default) or nkd.sweep (then the arguments after -- are
#                      nkd.sweep's, and --distributed is not added)
#   -h, --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

tpu="" zone="" project="" repo_dir="nkd" python=".venv/bin/python" sync=0 setup=0
background=0 module="nkd.main"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --repo-dir=*) repo_dir="${1#*=}" ;;
    --python=*) python="${1#*=}" ;;
    --sync) sync=1 ;;
    --setup) setup=1 ;;
    --background) background=1 ;;
    --module=*) module="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (nkd's flags go after --; see --help)" ;;
  esac
  shift
done
run_args=("$@")
[[ -n "$tpu" ]] || die "--tpu=NAME is required; see --help"
[[ -n "$zone" ]] || die "--zone=ZONE is required; see --help"
[[ ${#run_args[@]} -gt 0 ]] || die "no $module arguments after --; see --help"
[[ "$module" == nkd.main || "$module" == nkd.sweep ]] \
  || die "--module=$module: expected nkd.main or nkd.sweep"

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
[[ -n "$project" ]] && where+=("--project=$project")
ssh_all() {  # The gcloud command that runs the shell command $1 on every worker.
  printf '%s\n' "$(shell_join "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all \
    "--command=$1")"
}

commands=()
if [[ "$sync" == 1 ]]; then
  tarball="/tmp/nkd-src-$(cd "$NKD_REPO" && git rev-parse --short HEAD 2>/dev/null || echo head).tar.gz"
  commands+=("$(shell_join git -C "$NKD_REPO" archive --format=tar.gz -o "$tarball" HEAD)")
  commands+=("$(shell_join "${gcloud_tpu[@]}" scp "$tarball" "$tpu:/tmp/nkd-src.tar.gz" \
    "${where[@]}" --worker=all)")
  commands+=("$(ssh_all "mkdir -p $(shell_quote "$repo_dir") && tar -xzf /tmp/nkd-src.tar.gz -C $(shell_quote "$repo_dir")")")
fi
if [[ "$setup" == 1 ]]; then
  jax_version="$(sed -n 's/^jax==//p' "$NKD_REPO/requirements.txt")"
  commands+=("$(ssh_all "cd $(shell_quote "$repo_dir") && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt $(shell_quote "jax[tpu]==${jax_version:-0.10.2}")")")
fi
if [[ "$module" == nkd.main ]]; then
  run="$(shell_join "$python" -m nkd.main --distributed "${run_args[@]}")"
else
  run="$(shell_join "$python" -m nkd.sweep "${run_args[@]}")"
fi
if [[ "$background" == 1 ]]; then
  run="nohup $run > tpu_run.log 2>&1 < /dev/null &"
fi
commands+=("$(ssh_all "cd $(shell_quote "$repo_dir") && $run")")

if [[ "$DRY_RUN" == 1 ]]; then
  echo "# TPU VM $tpu ($zone): ${#commands[@]} command(s) (dry run: nothing run)"
  printf '%s\n' "${commands[@]}"
  exit 0
fi
command -v gcloud >/dev/null || die "gcloud not found: install the Google Cloud CLI (or --dry-run)"
for cmd in "${commands[@]}"; do
  echo "+ $cmd" >&2
  eval "$cmd"
done
