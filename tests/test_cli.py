"""Bad input: one line naming the flag or file, exit 2, no traceback, nothing overwritten.

The process-level contract (exit status, one `nkd: error:` line, no traceback) is checked once
in a subprocess; every other bad input is checked in this process, through the same code
(flag parsing and validation as nkd.main does it, then the pipeline)."""

import hashlib
import os
import subprocess
import sys

import pytest

from helpers import REPO, assert_one_line_error, parse_flags, run_cli, tiny_config, tiny_flags
from nkd import pipeline
from nkd.errors import ConfigError, NkdError


def _digest(folder):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      h.update(name.encode())
      h.update(open(os.path.join(root, name), "rb").read())
  return h.hexdigest()


def test_process_contract_one_line_exit_2_no_traceback_nothing_written(tmp_path):
  # An error found only once the devices are known: the whole path through nkd.main.
  proc = run_cli(
      [*tiny_flags(batch_size=31), f"--workspace={tmp_path}"],
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
  )
  assert_one_line_error(proc, "--batch_size=31", "2 devices")
  assert not os.path.exists(tmp_path / "runs" / "tiny" / "seed_0" / "checkpoints")


@pytest.mark.parametrize(
    "flags,fragments",
    [
        (["--model=resnet-18"], ["--model", "wrn-DEPTH-WIDTH"]),
        (["--model=wrn-15-2"], ["--model", "6n+4"]),
        (["--lr=-0.1"], ["--lr=-0.1", "positive"]),
        (["--epochs=-1"], ["--epochs=-1"]),
        (["--dropout=1.0"], ["--dropout"]),
        (["--mode=kd"], ["--teacher_flagfile"]),
        (["--input_noise_sigma=-0.1"], ["--input_noise_sigma=-0.1", ">= 0"]),
        (["--logit_noise_sigma=-1"], ["--logit_noise_sigma=-1"]),
        (["--logit_noise_sigma=0.1"], ["--logit_noise_sigma=0.1", "--mode=ce has no teacher"]),
        (["--fickle_teacher"], ["--fickle_teacher", "--mode=ce has no teacher"]),
        (["--swap_p=0.5"], ["--swap_p=0.5", "--mode=ce has no teacher"]),
        (["--label_noise_p=1.5"], ["--label_noise_p=1.5", "[0, 1]"]),
        (["--swap_p=-0.1"], ["--swap_p=-0.1", "[0, 1]"]),
        (["--swap_threshold=-1"], ["--swap_threshold=-1"]),
        (["--teacher_dropout=1.0"], ["--teacher_dropout=1.0", "[0, 1)"]),
        (["--label_noise_p=0.1", "--label_noise_mode=S"], ["--label_noise_mode=S", "teacher"]),
        (["--pgd_eps=-0.1"], ["--pgd_eps"]),
        (["--pgd_steps=0"], ["--pgd_steps"]),
        (["--pgd_restarts=0"], ["--pgd_restarts"]),
    ],
)
def test_bad_flags_name_the_flag(tmp_path, flags, fragments):
  with pytest.raises(ConfigError) as error:
    parse_flags([*tiny_flags(), f"--workspace={tmp_path}", *flags])
  for fragment in fragments:
    assert fragment in str(error.value)
  assert len(str(error.value).splitlines()) == 1


def test_teacher_recipe_that_is_not_a_teacher(tmp_path):
  config = parse_flags(
      [
          *tiny_flags(mode="kd"),
          f"--workspace={tmp_path}",
          "--teacher_flagfile=experiments/demo.flags",
      ]
  )
  with pytest.raises(ConfigError, match="--teacher_flagfile.*--mode=ce"):
    pipeline.run(config)
  assert not os.path.exists(tmp_path / "runs")


def test_unknown_flag_is_refused(tmp_path):
  proc = run_cli([*tiny_flags(), f"--workspace={tmp_path}", "--sigmaa=3"])
  assert proc.returncode != 0 and "sigmaa" in proc.stderr


def test_missing_cifar10_says_what_to_put_where(tmp_path):
  config = tiny_config(tmp_path, dataset="cifar10", data_dir=f"{tmp_path}/nothing", download=False)
  with pytest.raises(NkdError, match="cifar-10-python.tar.gz.*--data_dir|--data_dir.*cifar-10"):
    pipeline.run(config)


def test_corrupt_cifar10_tarball(tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b garbage")
  config = tiny_config(tmp_path, dataset="cifar10", data_dir=f"{tmp_path}/data", download=False)
  with pytest.raises(NkdError, match="cifar-10-python.tar.gz.*md5"):
    pipeline.run(config)
  assert (tmp_path / "data" / "cifar-10-python.tar.gz").read_bytes() == b"\x1f\x8b garbage"


def test_finished_workdir_with_another_config_is_left_alone(finished_runs):
  ws, workdir, _ = finished_runs
  before = _digest(workdir)
  config = tiny_config(ws, epochs=2, workspace=str(ws), workdir=str(workdir))
  with pytest.raises(ConfigError) as error:
    pipeline.run(config)
  for fragment in (f"--workdir={workdir}", "finished", "epochs"):
    assert fragment in str(error.value)
  assert _digest(workdir) == before


def test_finished_run_is_not_redone(finished_runs):
  ws, workdir, _ = finished_runs
  before = _digest(workdir)
  results = pipeline.run(tiny_config(ws, epochs=1, workspace=str(ws), workdir=str(workdir)))
  assert results.epochs == 1
  assert _digest(workdir) == before


def test_teacher_checkpoint_of_another_architecture(finished_runs, tmp_path):
  _, teacher_dir, _ = finished_runs  # A wrn-10-1.
  recipe = tmp_path / "teacher.flags"
  recipe.write_text("--mode=ce\n--model=wrn-10-2\n")
  config = tiny_config(
      tmp_path, mode="kd", teacher_flagfile=str(recipe), teacher_workdir=str(teacher_dir)
  )
  with pytest.raises(NkdError, match="wrn-10-1.*wrn-10-2"):
    pipeline.run(config)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_config(
      tmp_path, epochs=2, lr=1e30, momentum=0.0, log_every=1, workdir=str(tmp_path / "run")
  )
  with pytest.raises(NkdError, match="non-finite loss.*checkpoint"):
    pipeline.run(config)
  assert not os.path.exists(tmp_path / "run" / "results.json")
  # Nothing after the divergence was checkpointed.
  checkpoints = tmp_path / "run" / "checkpoints"
  assert not [d for d in os.listdir(checkpoints) if d.isdigit()] if checkpoints.exists() else True


@pytest.mark.parametrize(
    "module", ["nkd.main", "nkd.evaluate", "nkd.sweep.__main__", "nkd.report.__main__"]
)
def test_the_command_lines_load_jax_only_to_compute(module):
  """`--help`, a refused flag, a sweep's parent and a report need no JAX, Flax or Matplotlib:
  importing the entry point loads none of them (a second of CPU less per such process)."""
  heavy = ("jax", "flax", "optax", "orbax", "matplotlib")
  script = f"import sys, {module}; print(sorted(m for m in {heavy} if m in sys.modules))"
  out = subprocess.run(
      [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_run_loads_the_pipeline_with_the_collector_tuned_once():
  """nkd.main and nkd.evaluate import JAX through cli.load_pipeline: the collector's thresholds
  are raised and what is alive then is frozen, once per process (a second call, as in-process
  runs make, freezes nothing more: garbage pending then would never be collected)."""
  import gc  # pylint: disable=import-outside-toplevel

  from nkd import cli  # pylint: disable=import-outside-toplevel

  thresholds, frozen_before = gc.get_threshold(), gc.get_freeze_count()
  try:
    assert cli.load_pipeline() is pipeline
    assert gc.get_threshold() == cli.GC_THRESHOLDS
    frozen = gc.get_freeze_count()
    assert frozen > 0
    made_since = [[i] for i in range(5000)]  # tracked objects alive at the second call
    assert cli.load_pipeline() is pipeline
    assert gc.get_freeze_count() < frozen + len(made_since)
  finally:
    gc.set_threshold(*thresholds)
    if not frozen_before:
      gc.unfreeze()
