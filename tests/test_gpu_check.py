"""launch/gpu_check.sh --quick, the GPU check as a CPU smoke test: every step's line, the table
at the end, exit 0; bad input is one line and exit 2."""

import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, fast_compile_flags

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def gpu_check(*args, timeout=300):
  env = {**os.environ, "NKD_PYTHON": sys.executable, "XLA_FLAGS": fast_compile_flags()}
  return subprocess.run(
      ["bash", str(REPO / "launch" / "gpu_check.sh"), *map(str, args)],
      cwd="/",
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def test_quick_check_passes_on_a_cpu(tmp_path):
  out = tmp_path / "check"
  proc = gpu_check("--quick", f"--out={out}", f"--wheels={tmp_path / 'no_wheels'}")
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  table = proc.stdout.split("\nstep ", 1)[1].splitlines()[1:]
  assert table == (out / "summary.txt").read_text().splitlines()[2:]
  results = {line.split()[0]: line.split()[1] for line in table}
  assert results == {
      "wheels": "SKIP",
      "versions": "PASS",
      "gpu": "SKIP",
      "train": "PASS",
      "pgd": "PASS",
      "report": "SKIP",
  }
  line = {row.split()[0]: row for row in table}
  assert "2 steps on cpu:" in line["train"] and "params_sha256 " in line["train"]
  assert "PGD-2 eps 0.031" in line["pgd"] and "of 20 images" in line["pgd"]
  assert "jax " in line["versions"] and "flax " in line["versions"]
  for package in ("python", "jaxlib", "optax", "orbax-checkpoint", "chex"):
    assert f"{package} " in proc.stdout
  assert "devices [" in proc.stdout


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--quick", "--bogus"], "unknown argument --bogus"),
        (["--quick", "--out=/"], "is not empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment):
  proc = gpu_check(*args, timeout=60)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  (line,) = proc.stderr.strip().splitlines()
  assert line.startswith("gpu_check.sh: error: ") and fragment in line
