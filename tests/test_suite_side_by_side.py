"""benchmarks/suite_side_by_side.py on a repository of two revisions whose `.ci/run` is a few
lines: each run in a fresh clone at its revision, with its own caches, timed with its whole
process tree; bad input is one line and exit 2."""

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

SCRIPT = str(REPO / "benchmarks" / "suite_side_by_side.py")
# A child process that burns CPU, so the run's CPU is its process tree's, not bash's alone.
CI_RUN = """#!/usr/bin/env bash
set -eu
test "$CI" = true && test -d "$TMPDIR" && test -d "$XDG_CACHE_HOME"
test ! -e "$NKD_CI_VENV"
echo "$TMPDIR" >> "{seen}"
python3 -c "sum(i * i for i in range({n}))"
echo "{summary}"
exit {code}
"""


def _git(repo, *args):
  return subprocess.run(
      ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
  ).stdout.strip()


def _commit(repo, seen, *, n, summary, code):
  (repo / ".ci").mkdir(exist_ok=True)
  (repo / ".ci" / "run").write_text(CI_RUN.format(seen=seen, n=n, summary=summary, code=code))
  _git(repo, "add", "-A")
  _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", summary)
  return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def two_revisions(tmp_path_factory):
  repo = tmp_path_factory.mktemp("repo")
  seen = repo.parent / "tmpdirs_seen.txt"
  _git(repo, "init", "-q")
  old = _commit(repo, seen, n=3_000_000, summary="1 failed, 2 passed in 0.30s", code=1)
  new = _commit(repo, seen, n=300_000, summary="3 passed, 1 skipped in 0.10s", code=0)
  return repo, seen, old, new


def _script(*args, cwd=None):
  return subprocess.run(
      [sys.executable, SCRIPT, *map(str, args)],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=cwd,
  )


def test_runs_each_revision_in_a_fresh_clone_and_compares_cpu(two_revisions, tmp_path):
  repo, seen, old, new = two_revisions
  out = tmp_path / "out"
  # Relative folders, as a user types them: each run's TMPDIR must still be absolute.
  proc = _script(
      f"--repo={os.path.relpath(repo, tmp_path)}",
      f"--rev={new}",
      f"--against={old}",
      "--workdir=out",
      cwd=tmp_path,
  )
  assert proc.returncode == 0, proc.stderr
  result = json.loads((out / "side_by_side.json").read_text())
  runs = result["runs"]
  assert [r["run"] for r in runs] == ["1 A", "2 B", "3 A"]
  assert [r["rev"] for r in runs] == [new[:10], old[:10], new[:10]]
  assert [r["exit_code"] for r in runs] == [0, 1, 0]
  assert [r["tests"] for r in runs] == [
      "3 passed, 1 skipped",
      "1 failed, 2 passed",
      "3 passed, 1 skipped",
  ]
  # The CPU is the run's process tree's: the old revision's child burns ten times as much.
  assert runs[1]["cpu_s"] > max(runs[0]["cpu_s"], runs[2]["cpu_s"])
  assert all(abs(r["cpu_s"] - r["user_s"] - r["sys_s"]) < 0.11 for r in runs)
  b = runs[1]["cpu_s"]
  assert result["a_over_b_cpu"] == [round(runs[0]["cpu_s"] / b, 3), round(runs[2]["cpu_s"] / b, 3)]
  # A new TMPDIR each run; the clones, caches and environments are gone, the logs kept.
  tmpdirs = seen.read_text().split()
  assert len(set(tmpdirs[-3:])) == 3
  assert all(t.startswith(str(out) + os.sep) for t in tmpdirs[-3:])
  for i, label in enumerate("ABA", 1):
    folder = out / f"{i:02d}-{label}"
    assert sorted(os.listdir(folder)) == ["ci.log"]
  assert "| 2 B | " in proc.stdout and "CPU of A over B's mean" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--order=AAA"], "--order=AAA: expected A and B, each at least once"),
        (["--order=ABC"], "--order=ABC: expected A and B"),
        (["--rev=nope"], "--rev=nope: not a commit of"),
        (["--against=0000000"], "--against=0000000: not a commit of"),
    ],
)
def test_bad_input_is_one_line(two_revisions, args, message):
  repo, _, old, _ = two_revisions
  proc = _script(f"--repo={repo}", f"--against={old}", *args)
  assert proc.returncode == 2
  assert proc.stderr.startswith(f"suite_side_by_side: {message}") and proc.stderr.count("\n") == 1
  assert proc.stdout == ""


def test_a_folder_with_files_is_refused_and_left_alone(two_revisions, tmp_path):
  repo, _, old, _ = two_revisions
  (tmp_path / "keep.txt").write_text("mine")
  proc = _script(f"--repo={repo}", f"--against={old}", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and "not empty" in proc.stderr
  assert os.listdir(tmp_path) == ["keep.txt"]
