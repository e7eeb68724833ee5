#!/usr/bin/env bash
# The GPU check: on a machine with these sources and the Python packages of its own (JAX with
# its CUDA plugin, Flax, optax, orbax, chex, absl), nothing installed by us and no package index:
#   (a) installs the wheel files copied in with the sources (wheels/, git-ignored), if any,
#   (b) prints the versions and jax.devices(); fails when JAX sees no GPU,
#   (c) trains 2 steps (python -m nkd.main, WRN-10-1 on synthetic data) and attacks 20 of its
#       test images with PGD-20 (python -m nkd.evaluate), under a minute together,
#   (d) runs the full GPU report (python -m benchmarks.bench --report=DIR, BENCHMARKS.md),
# printing PASS, FAIL or SKIP per step and a table at the end (also OUT/summary.txt).
#
#   bash launch/gpu_check.sh [--cifar10_npz=NPZ | --data_dir=D] [--out=DIR] [--python=PY]
#                            [--wheels=DIR] [--time_limit_s=S] [--quick]
#
# --quick: a CPU smoke test (no GPU required, no report, PGD-2). The report needs CIFAR-10:
# --cifar10_npz (default .data/cifar10_jpeg.npz when present) or --data_dir; --time_limit_s is
# the report's (default 480, so the whole check fits in 10 minutes). Exit 0 when no step
# failed, 1 otherwise, 2 for bad input.
#
# The wheels, downloaded on a machine with an index for the GPU machine's Python (3.12 here),
# and copied in with the sources (they travel as an ignored folder):
#   pip download -d wheels/ --only-binary=:all: --python-version 3.12 --no-deps tensorboardX==2.6.5
# (--no-deps: tensorboardX's numpy, packaging and protobuf come with JAX and orbax; name
# further packages the same way). They are installed into PY's environment with
#   PY -m pip install --no-index --find-links wheels/ wheels/*.whl
# (an externally managed system Python refuses: use a venv's --python, or set
# PIP_BREAK_SYSTEM_PACKAGES=1 on a machine of your own to throw away).
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

quick=0 out="" py="" wheels="$NKD_REPO/wheels" npz="" data_dir="" time_limit_s=480
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --out=*) out="${arg#*=}" ;;
    --python=*) py="${arg#*=}" ;;
    --wheels=*) wheels="${arg#*=}" ;;
    --cifar10_npz=*) npz="${arg#*=}" ;;
    --data_dir=*) data_dir="${arg#*=}" ;;
    --time_limit_s=*) time_limit_s="${arg#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $arg (see --help)" ;;
  esac
done
py="${py:-$(default_python)}"
if [[ -z "$out" ]]; then
  out="$(mktemp -d "${TMPDIR:-/tmp}/nkd-gpu-check.XXXXXX")" || die "cannot make a temporary folder"
elif [[ -e "$out" && -n "$(ls -A "$out" 2>/dev/null)" ]]; then
  die "--out=$out is not empty (the runs in it would not be redone)"
fi
mkdir -p "$out/logs" || die "cannot make $out"
out="$(cd "$out" && pwd)"
if [[ "$quick" == 0 && -z "$npz$data_dir" && -f "$NKD_REPO/.data/cifar10_jpeg.npz" ]]; then
  npz="$NKD_REPO/.data/cifar10_jpeg.npz"
fi
cd "$NKD_REPO" || die "cannot enter $NKD_REPO"

rows=() failed=0
# row STEP RESULT SECONDS DETAIL: one line now, and one row of the final table.
row() {
  local line
  line="$(printf '%-9s %-4s %5ss  %s' "$1" "$2" "$3" "$4")"
  echo "$line"
  rows+=("$line")
  [[ "$2" == FAIL ]] && failed=1
  return 0
}
# timed NAME CMD...: runs CMD with its output in logs/NAME.log; sets $secs and returns its status.
timed() {
  local name="$1" start status
  shift
  start=$SECONDS
  "$@" >"$out/logs/$name.log" 2>&1
  status=$?
  secs=$((SECONDS - start))
  return $status
}
last_line() { grep -v '^\s*$' "$out/logs/$1.log" | tail -n 1 | cut -c1-160; }

echo "nkd GPU check$([[ $quick == 1 ]] && echo ' (--quick: CPU smoke test)'): $py, logs and runs in $out"

# (a) The wheels copied in with the sources.
shopt -s nullglob
found=("$wheels"/*.whl)
shopt -u nullglob
if (( ${#found[@]} == 0 )); then
  row wheels SKIP 0 "no wheel files in $wheels"
elif timed wheels "$py" -m pip install --disable-pip-version-check --no-index \
    --find-links "$wheels" "${found[@]}"; then
  row wheels PASS "$secs" "${#found[@]} installed from $wheels: $(cd "$wheels" && ls *.whl |
    sed 's/-py.*//; s/-cp.*//' | tr '\n' ' ')"
else
  row wheels FAIL "$secs" "pip: $(last_line wheels)"
fi

# (b) Versions and devices.
if timed versions "$py" - <<'PY'
import importlib.metadata as md, platform
def version(name):
  try:
    return md.version(name)
  except md.PackageNotFoundError:
    return "none"
names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "tensorboardX",
         "tensorflow-datasets", "torch")
print(" ".join([f"python {platform.python_version()}"] + [f"{n} {version(n)}" for n in names]))
import jax
from nkd import runtime
flag = "--xla_gpu_deterministic_ops"
print(f"backend {jax.default_backend()} devices {jax.devices()}")
print(f"{flag} {'known' if runtime.known_xla_flags((flag,)) else 'UNKNOWN'} to this jaxlib")
PY
then
  sed 's/^/  /' "$out/logs/versions.log" | grep -v '^  [IWE][0-9]\{4\} '
  row versions PASS "$secs" "$(grep '^python ' "$out/logs/versions.log" | cut -d' ' -f1-8)"
else
  row versions FAIL "$secs" "$(last_line versions)"
fi
backend="$(sed -n 's/^backend \([a-z]*\) .*/\1/p' "$out/logs/versions.log")"
devices="$(sed -n 's/^backend [a-z]* devices //p' "$out/logs/versions.log" | cut -c1-120)"
if [[ "$backend" == gpu ]]; then
  row gpu PASS 0 "$devices"
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true"
elif [[ "$quick" == 1 ]]; then
  row gpu SKIP 0 "--quick: JAX computes on ${backend:-?}"
else
  row gpu FAIL 0 "JAX sees no GPU (backend ${backend:-?}): install JAX's CUDA plugin (pip install -r requirements-cuda.txt, or its wheels in $wheels)"
fi

# (c) A 2-step training run and a 20-image PGD on it.
pgd_steps=20
[[ "$quick" == 1 ]] && pgd_steps=2
run="$out/train"
if timed train "$py" -m nkd.main --dataset=synthetic --model=wrn-10-1 \
    --synthetic_train_size=64 --synthetic_test_size=64 --batch_size=32 --epochs=1 \
    --lr_schedule=cosine --log_every=1 --eval_suite=accuracy --name=gpu_check \
    --workspace="$out/workspace" --workdir="$run"; then
  row train PASS "$secs" "$("$py" - "$run" <<'PY'
import json, os, sys
results = json.load(open(os.path.join(sys.argv[1], "results.json")))
device = json.load(open(os.path.join(sys.argv[1], "config.json")))["device"]
print(f"{results['steps']} steps on {device}: test acc {results['test_accuracy']:.2f}%, "
      f"params_sha256 {results['params_sha256'][:16]}, {results['wall_time_s']:.1f} s")
PY
)"
else
  row train FAIL "$secs" "$(last_line train)"
fi
if [[ ! -f "$run/results.json" ]]; then
  row pgd SKIP 0 "no trained run"
elif timed pgd "$py" -m nkd.evaluate --workdir="$run" --eval_suite=pgd \
    --pgd_num_examples=20 --pgd_steps="$pgd_steps" --pgd_restarts=1 --pgd_eps_sweep=; then
  row pgd PASS "$secs" "$("$py" - "$run" <<'PY'
import json, os, sys
pgd = json.load(open(os.path.join(sys.argv[1], "results.json")))["pgd"]
print(", ".join(f"PGD-{r['steps']} eps {r['eps']:g}: robust {r['robust_accuracy']:.2f}%"
                for r in pgd["results"]) + f" of {pgd.get('num_examples', 20)} images")
PY
)"
else
  row pgd FAIL "$secs" "$(last_line pgd)"
fi

# (d) The full GPU report.
if [[ "$quick" == 1 ]]; then
  row report SKIP 0 "--quick"
elif [[ -z "$npz$data_dir" ]]; then
  row report FAIL 0 "no CIFAR-10: --cifar10_npz=NPZ (e.g. .data/cifar10_jpeg.npz) or --data_dir=D"
else
  data=("--cifar10_npz=$npz")
  [[ -n "$data_dir" ]] && data=("--data_dir=$data_dir")
  if timed report "$py" -m benchmarks.bench --report="$out/report" "${data[@]}" \
      --time_limit_s="$time_limit_s"; then
    row report PASS "$secs" "$out/report/report.md"
  else
    row report FAIL "$secs" "$(last_line report) (report so far: $out/report/report.md)"
  fi
fi

{
  echo
  printf '%-9s %-4s %6s  %s\n' step result time detail
  printf '%s\n' "${rows[@]}"
} | tee "$out/summary.txt"
exit "$failed"
