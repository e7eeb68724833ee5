"""The package installs from a clean copy into a fresh virtual environment (`pip install .`, then
`pip install -e .`), and works away from the repository: every console script answers --help,
and nkd-train trains a tiny run in an empty folder.

The fresh environment sees the test process's packages (a .pth file naming its site-packages),
so pip installs nkd alone: its dependency ranges (pyproject.toml) are still resolved, against
the versions requirements.txt pinned, and a range that excluded one would make pip fetch
another. Installing the dependencies themselves into a fresh environment is what .ci/run does
before the tests; doing it again here cost 36 s of CPU (2-vCPU Zen 4). Needs a package index
for the build backend (setuptools, as pyproject.toml asks)."""

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from helpers import REPO, tiny_flags
from nkd import cpu_kernels

SCRIPTS = {
    "nkd-train": "nkd.main:",
    "nkd-evaluate": "nkd.evaluate:",
    "nkd-sweep": "nkd.sweep",
    "nkd-report": "--out",
    "nkd-bench": "--quick",
}
# Left out of the copy besides what git ignores (where there is no git: the same by name).
_NOT_COPIED = (
    ".git",
    ".venv",
    "workspace",
    "runs",
    ".data",
    ".whl",
    "__pycache__",
    "build",
    "*.egg-info",
    ".pytest_cache",
)


def clean_copy(dest) -> None:
  """The repository's files without build outputs, caches and run folders."""
  try:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
  except (OSError, subprocess.CalledProcessError):
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    return
  for name in filter(None, listed):
    if os.path.isfile(REPO / name):
      os.makedirs(os.path.dirname(dest / name), exist_ok=True)
      shutil.copy2(REPO / name, dest / name)


def pip(python, *args, cwd):
  """`pip install ARGS` into the environment of `python` (which has no pip of its own), by this
  process's pip."""
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
      + ["--disable-pip-version-check", *args],
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=1800,
  )
  if proc.returncode:
    log = proc.stdout + proc.stderr
    offline = (
        "(from versions: none)",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Network is unreachable",
    )
    if any(sign in log for sign in offline):
      pytest.skip(f"no package index reachable: {log.strip().splitlines()[-1]}")
    raise AssertionError(f"pip install {' '.join(args)} failed:\n{log[-4000:]}")


@pytest.mark.slow
def test_installs_into_a_fresh_venv_and_runs_away_from_the_repository(tmp_path):
  source, env_dir, away = tmp_path / "nkd", tmp_path / "venv", tmp_path / "elsewhere"
  clean_copy(source)
  away.mkdir()
  venv.create(env_dir, with_pip=False)
  python, bin_dir = str(env_dir / "bin" / "python"), env_dir / "bin"
  purelib = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      capture_output=True,
      text=True,
      check=True,
  ).stdout.strip()
  # After the environment's own site-packages on sys.path: nkd installed there comes first.
  ours = [p for p in site.getsitepackages() if os.path.isdir(p)]
  (Path(purelib) / "_test_process_packages.pth").write_text("\n".join(ours) + "\n")
  pip(python, str(source), cwd=away)

  # Every console script at once (each imports JAX), from a folder that is not the repository.
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  procs = {
      name: subprocess.Popen(
          [str(bin_dir / name), "--help"],
          cwd=away,
          env=env,
          text=True,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
      )
      for name in SCRIPTS
  }
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (name, err[-3000:])
    assert SCRIPTS[name] in out, (name, out[:500])
  where = subprocess.run(
      [python, "-c", "import nkd; print(nkd.__file__)"],
      cwd=away,
      env=env,
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  assert str(env_dir) in where  # installed, not found in a checkout

  # The installed package trains a run in an empty folder, with nothing of the repository.
  run = subprocess.run(
      [str(bin_dir / "nkd-train"), *tiny_flags(epochs=1), "--name=away"],
      cwd=away,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert (away / "workspace" / "runs" / "away" / "seed_0" / "results.json").exists()
  config = json.loads((away / "workspace" / "runs" / "away" / "seed_0" / "config.json").read_text())
  assert config["cpu"]["kernels"] == cpu_kernels.status()  # the kernel's source is installed

  # Editable: the same environment now imports the copy itself.
  pip(python, "--no-deps", "-e", str(source), cwd=away)
  where = subprocess.run(
      [python, "-c", "import nkd; print(nkd.__file__)"],
      cwd=away,
      env=env,
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  assert where.strip() == str(source / "nkd" / "__init__.py")
  assert (
      subprocess.run(
          [str(bin_dir / "nkd-report"), "--help"], cwd=away, env=env, capture_output=True
      ).returncode
      == 0
  )
