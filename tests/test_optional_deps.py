"""Optional packages and a GPU left unused: without tensorboardX a run says so in one line and
ends with the same parameters; without tensorflow-datasets the TFDS sources are a one-line
error naming the flag; JAX on the CPU of a machine with an NVIDIA GPU is pointed out once."""

import importlib.util
import json
import logging
import os
import sys

import pytest

from helpers import assert_one_line_error, run_cli, tiny_flags

from nkd import devices
from nkd import tensorboard
from nkd.data import cifar10
from nkd.errors import DataError
from nkd.evaluation import cifar10c


def unimportable(tmp_path, module: str) -> dict[str, str]:
  """The environment of a child process in which `import module` fails as if not installed."""
  package = tmp_path / "absent" / module
  package.mkdir(parents=True)
  (package / "__init__.py").write_text(
      f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
  )
  path = [str(tmp_path / "absent"), *filter(None, [os.environ.get("PYTHONPATH")])]
  return {"PYTHONPATH": os.pathsep.join(path)}


def results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def event_files(folder):
  return [name for name in os.listdir(folder) if name.startswith("events.out.tfevents.")]


def test_a_run_without_tensorboardx_says_so_once_and_trains_the_same(tmp_path):
  flags = [*tiny_flags(epochs=1), f"--workspace={tmp_path}"]
  proc = run_cli(
      [*flags, f"--workdir={tmp_path}/without"], env=unimportable(tmp_path, "tensorboardX")
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  said = [line for line in proc.stderr.splitlines() if "tensorboardX" in line]
  assert len(said) == 1, proc.stderr[-3000:]
  assert said[0].endswith(
      "nkd: tensorboardX is not installed: no TensorBoard event files are "
      "written (pip install tensorboardX)"
  )
  assert "Traceback" not in proc.stderr
  assert not event_files(tmp_path / "without")

  # The same run with tensorboardX where it is installed (else without event files).
  with_it = importlib.util.find_spec("tensorboardX") is not None
  run_cli(
      [*flags, f"--workdir={tmp_path}/with", f"--tensorboard={str(with_it).lower()}"], check=True
  )
  assert bool(event_files(tmp_path / "with")) == with_it
  assert (
      results(tmp_path / "without")["params_sha256"] == results(tmp_path / "with")["params_sha256"]
  )


def test_board_without_tensorboardx_writes_nothing_and_says_so_once(tmp_path, monkeypatch, caplog):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
  monkeypatch.setattr(tensorboard, "_said_missing", False)
  with caplog.at_level(logging.WARNING):
    for _ in range(2):
      with tensorboard.Board(str(tmp_path / "run")) as board:
        board.scalars(1, {"train/loss": 1.0})
  said = [r.getMessage() for r in caplog.records if "tensorboardX" in r.getMessage()]
  assert said == [
      "nkd: tensorboardX is not installed: no TensorBoard event files are written "
      "(pip install tensorboardX)"
  ]
  assert not os.path.exists(tmp_path / "run")


def test_tfds_data_source_without_tensorflow_datasets_is_one_line_naming_the_flag(tmp_path):
  proc = run_cli(
      [
          *tiny_flags(),
          "--dataset=cifar10",
          "--data_source=tfds",
          f"--data_dir={tmp_path}",
          f"--workspace={tmp_path}",
      ],
      env=unimportable(tmp_path, "tensorflow_datasets"),
  )
  assert_one_line_error(
      proc, "--data_source=tfds", "tensorflow-datasets", "pip install tensorflow-datasets"
  )


def test_tfds_sources_without_tensorflow_datasets_raise_our_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(
      DataError,
      match=r"^--data_source=tfds needs tensorflow-datasets, which is "
      r"not installed: pip install tensorflow-datasets$",
  ):
    cifar10.load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "cache"), source="tfds")
  (tmp_path / "cifar10").mkdir()  # A prepared TFDS cifar10, found by --data_source=auto.
  with pytest.raises(
      DataError,
      match=r"--data_source=auto found a TFDS cifar10 in --data_dir="
      r".* pip install tensorflow-datasets",
  ):
    cifar10.load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "cache"), download=False)
  with pytest.raises(
      cifar10c.DataUnavailableError,
      match=r"^--cifar10c_source=tfds needs tensorflow-datasets.*: pip install "
      r"tensorflow-datasets$",
  ):
    cifar10c.load_cifar10c("tfds", corruptions=["fog"])


@pytest.fixture
def on_cpu_with(monkeypatch):
  """`pretend(evidence)`: this machine shows an NVIDIA GPU by `evidence` (its device file,
  nvidia-smi, or None: no GPU), JAX picks its platform itself, nothing was said yet."""
  exists = os.path.exists

  def pretend(evidence):
    monkeypatch.setattr(
        devices.os.path,
        "exists",
        lambda path: (evidence == "/dev/nvidia0" if path == "/dev/nvidia0" else exists(path)),
    )
    monkeypatch.setattr(
        devices.shutil,
        "which",
        lambda name: (
            "/usr/bin/nvidia-smi" if evidence == "nvidia-smi" and name == "nvidia-smi" else None
        ),
    )
    monkeypatch.setattr(devices, "_platforms_chosen", lambda: "")
    monkeypatch.setattr(devices, "_said_gpu_unused", False)

  return pretend


@pytest.mark.parametrize("evidence", ["/dev/nvidia0", "nvidia-smi"])
def test_jax_on_the_cpu_of_a_gpu_machine_is_said_once_with_the_fix(evidence, on_cpu_with, caplog):
  on_cpu_with(evidence)
  with caplog.at_level(logging.WARNING):
    devices.environment()
    devices.environment()
  said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("nkd: JAX")]
  assert said == [
      f"nkd: JAX computes on the CPU, but this machine has an NVIDIA GPU "
      f"({evidence}): install JAX's CUDA plugin: pip install -r "
      f"requirements-cuda.txt"
  ]


def test_no_gpu_or_a_chosen_platform_is_not_warned_about(on_cpu_with, monkeypatch, caplog):
  on_cpu_with(None)
  with caplog.at_level(logging.WARNING):
    devices.warn_if_gpu_unused()
    on_cpu_with("/dev/nvidia0")
    monkeypatch.setattr(devices, "_platforms_chosen", lambda: "cpu")  # JAX_PLATFORMS=cpu
    devices.warn_if_gpu_unused()
  assert not [r for r in caplog.records if r.getMessage().startswith("nkd: JAX")]
