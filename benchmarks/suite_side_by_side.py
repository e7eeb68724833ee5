"""The whole CI suite of two revisions, side by side: wall time and CPU time (user + sys).

  python3 benchmarks/suite_side_by_side.py --rev=HEAD --against=REV [--order=ABA]
                                           [--workdir=DIR] [--repo=PATH]

Each run is `CI=true bash .ci/run` in a fresh clone of the revision (A: --rev, B: --against),
with its own new TMPDIR, XDG_CACHE_HOME, PIP_CACHE_DIR and virtual environment (NKD_CI_VENV):
empty caches, install included, as a new CI machine runs it. The runs go one after the other in
--order (ABA by default: the revision under test before and after the other, so that a drift of
the machine's speed shows as a difference between its two runs). Prints a row per run and the
CPU of each A run over the mean of the B runs. Logs stay in DIR/NN-LABEL/ci.log (the clones,
environments and caches are removed after each run). Standard library only: it runs before any
environment exists. Run it alone on the machine: anything else running skews it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed).*) in [\d.]+s")


class Refused(Exception):
  pass


def parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="benchmarks/suite_side_by_side.py", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--rev", default="HEAD", help="A: the revision under test (default HEAD)")
  parser.add_argument("--against", required=True, help="B: the revision to compare with")
  parser.add_argument("--order", default="ABA", help="the runs, in order (A and B; default ABA)")
  parser.add_argument("--workdir", default="", help="where logs go (new or empty; default: a temp)")
  parser.add_argument("--repo", default=REPO, help="the git repository to clone (default: this)")
  args = parser.parse_args(argv)
  args.repo = os.path.abspath(args.repo)
  if set(args.order) != {"A", "B"}:
    raise Refused(f"--order={args.order}: expected A and B, each at least once (e.g. ABA)")
  for flag, rev in (("--rev", args.rev), ("--against", args.against)):
    found = subprocess.run(
        ["git", "-C", args.repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode:
      raise Refused(f"{flag}={rev}: not a commit of {args.repo}")
    setattr(args, flag[2:], found.stdout.strip())
  if args.workdir and os.path.isdir(args.workdir) and os.listdir(args.workdir):
    raise Refused(f"--workdir={args.workdir}: not empty; give a new folder")
  return args


def one_run(repo: str, rev: str, folder: str) -> dict:
  """`CI=true bash .ci/run` in a fresh clone at `rev`, everything it writes under `folder`."""
  clone, tmp, cache, venv = (os.path.join(folder, n) for n in ("repo", "tmp", "cache", "venv"))
  subprocess.run(["git", "clone", "-q", repo, clone], check=True)
  subprocess.run(["git", "-C", clone, "checkout", "-q", rev], check=True)
  os.makedirs(tmp)
  os.makedirs(cache)
  env = {
      **os.environ,
      "CI": "true",
      "TMPDIR": tmp,
      "XDG_CACHE_HOME": cache,
      "PIP_CACHE_DIR": os.path.join(cache, "pip"),
      "NKD_CI_VENV": venv,
  }
  env.pop("VIRTUAL_ENV", None)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  started, start = time.strftime("%H:%M:%S"), time.monotonic()
  with open(os.path.join(folder, "ci.log"), "wb") as log:
    proc = subprocess.Popen(["bash", ".ci/run"], cwd=clone, env=env, stdout=log, stderr=log)
    _, status, usage = os.wait4(proc.pid, 0)  # the run's whole process tree, once reaped
  wall = time.monotonic() - start
  summary = ""
  with open(os.path.join(folder, "ci.log"), errors="replace") as log:
    for line in log:
      m = SUMMARY.match(line.strip())
      if m:
        summary = m.group(1)
  for path in (clone, tmp, cache, venv):
    shutil.rmtree(path, ignore_errors=True)
  return {
      "rev": rev[:10],
      "started": started,
      "exit_code": os.waitstatus_to_exitcode(status),
      "wall_s": round(wall, 1),
      "user_s": round(usage.ru_utime, 1),
      "sys_s": round(usage.ru_stime, 1),
      "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
      "tests": summary,
  }


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def main(argv: list[str]) -> int:
  try:
    args = parse(argv)
  except Refused as e:
    print(f"suite_side_by_side: {e}", file=sys.stderr)
    return 2
  # Absolute: each run gets TMPDIR and the rest under it, and runs in its clone.
  workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="nkd-side-by-side-"))
  os.makedirs(workdir, exist_ok=True)
  revs = {"A": args.rev, "B": args.against}
  print(f"A {args.rev[:10]}, B {args.against[:10]}, order {args.order}; logs in {workdir}")
  print("| run | rev | started | exit | tests | wall | CPU (user + sys) |")
  print("|---|---|---|---:|---|---:|---:|")
  runs = []
  for i, label in enumerate(args.order, 1):
    run = {
        "run": f"{i} {label}",
        **one_run(args.repo, revs[label], os.path.join(workdir, f"{i:02d}-{label}")),
    }
    runs.append(run)
    print(
        f"| {run['run']} | {run['rev']} | {run['started']} | {run['exit_code']} | "
        f"{run['tests'] or '(no pytest summary)'} | {_minutes(run['wall_s'])} | "
        f"{run['user_s']:.0f} + {run['sys_s']:.0f} = {run['cpu_s'] / 60:.1f} min |",
        flush=True,
    )
  b_cpu = statistics.mean(r["cpu_s"] for r in runs if r["run"].endswith("B"))
  ratios = [round(r["cpu_s"] / b_cpu, 3) for r in runs if r["run"].endswith("A")]
  print(f"CPU of A over B's mean ({b_cpu / 60:.1f} min): {', '.join(map(str, ratios))}")
  with open(os.path.join(workdir, "side_by_side.json"), "w") as f:
    json.dump({"a": args.rev, "b": args.against, "runs": runs, "a_over_b_cpu": ratios}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
