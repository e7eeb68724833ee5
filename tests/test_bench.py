"""benchmarks.bench --quick prints a well-formed table and writes well-formed JSON; the PyTorch
reference (where PyTorch is installed) is the same network as ours and its benchmark runs."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from helpers import REPO

from benchmarks import bench
from nkd.models import count_params, create_model
from nkd.models.wrn import init_variables

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  path = tmp_path_factory.mktemp("bench") / "bench.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--quick", f"--json={path}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, json.loads(path.read_text())


def test_quick_table_has_every_row(quick):
  proc, _ = quick
  lines = proc.stdout.strip().splitlines()
  assert lines[0].startswith("benchmarks.bench on cpu:") and "QUICK" in lines[0]
  assert lines[1].split()[:3] == ["row", "what", "img/s"] and set(lines[2]) == {"-"}
  rows = lines[3:]
  assert [r.split()[0] for r in rows] == list(bench.ROWS)
  for r in rows:
    assert float(r.split()[-1]) > 0


def test_quick_json_is_well_formed(quick):
  _, result = quick
  assert set(result) == {"environment", "settings", "rows", "anchors_h200"}
  env = result["environment"]
  assert env["device"].startswith("cpu:") and env["device_count"] >= 1
  for package in ("jax", "jaxlib", "flax", "optax", "numpy"):
    assert env["versions"][package]
  settings = result["settings"]
  assert settings["quick"] and settings["batch"] == 32
  assert sorted(result["rows"]) == sorted(bench.ROWS)
  for name, row in result["rows"].items():
    repeats = settings["epoch_repeats"] if name == "epoch" else settings["repeats"]
    assert len(row["times_s"]) == repeats and all(t > 0 for t in row["times_s"])
    assert row["median_s"] == pytest.approx(float(np.median(row["times_s"])))
    assert row["img_per_s"] == pytest.approx(row["images_per_timing"] / row["median_s"])
  assert result["rows"]["epoch"]["steps_per_epoch"] == 256 // 32
  assert result["rows"]["pgd20_fp32"]["images_per_timing"] == 64
  assert result["anchors_h200"]["kd_step_fp32"]["pytorch_eager"] == 9600


def test_bad_arguments_are_one_line(capsys):
  for argv, fragment in ((["--only=kd_step,epoch"], "unknown row 'kd_step'"),
                         (["--steps=0"], "--steps=0: 0 is not a positive integer"),
                         (["--quick", "--epoch_images=8"], "at least one batch"),
                         (["--bogus"], "unknown option --bogus"),
                         (["--quik"], "unknown option --quik (did you mean --quick?)"),
                         (["--quick", "epoch"], "unexpected arguments epoch")):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("benchmarks.bench: error: ")
    assert fragment in err[0]


def test_flags_make_the_settings():
  flag_values, settings, rows = bench.parse_flags(
      ["--quick", "--only=epoch,pgd20_fp32", "--repeats=7", "--nogpu_deterministic"])
  assert rows == ("epoch", "pgd20_fp32") and not flag_values.gpu_deterministic
  assert settings.quick and settings.repeats == 7 and settings.epoch_repeats == 1
  _, settings, rows = bench.parse_flags([])
  assert rows == bench.ROWS and settings == bench.Settings()


def test_torch_reference_without_torch_says_so(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  out = bench.torch_reference(bench.Settings.quick_settings(), bench.ROWS)
  assert set(out) == {"error"} and "PyTorch is not importable" in out["error"]
  table = bench.format_table({
      "environment": {"device": "cpu:cpu", "device_count": 1, "versions": {"jax": "x"}},
      "settings": {"quick": True}, "rows": {"epoch": {"img_per_s": 1.0}},
      "torch_reference": out})
  assert table.splitlines()[-1].startswith("torch reference: PyTorch is not importable")


# ---------------------------------------------------------------------------------------------
# The PyTorch reference (skipped where PyTorch is absent: it is not a requirement, so it is
# imported inside the tests).

def _to_torch(model, variables):
  """Copies Flax WRN variables into benchmarks.torch_reference's WideResNet."""
  import torch  # pylint: disable=import-outside-toplevel
  params, stats = variables["params"], variables["batch_stats"]
  state = {}

  def conv(prefix, p):
    state[prefix + ".weight"] = np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1))

  def bn(prefix, p, s):
    state[prefix + ".weight"] = np.asarray(p["BatchNorm_0"]["scale"])
    state[prefix + ".bias"] = np.asarray(p["BatchNorm_0"]["bias"])
    state[prefix + ".running_mean"] = np.asarray(s["BatchNorm_0"]["mean"])
    state[prefix + ".running_var"] = np.asarray(s["BatchNorm_0"]["var"])

  conv("conv_init", params["conv_init"])
  blocks = sorted((k for k in params if k.startswith("group")),
                  key=lambda k: (int(k[5]), int(k.split("block")[1])))
  for i, name in enumerate(blocks):
    p, s = params[name], stats[name]
    bn(f"blocks.{i}.bn1", p["bn1"], s["bn1"])
    bn(f"blocks.{i}.bn2", p["bn2"], s["bn2"])
    conv(f"blocks.{i}.conv1", p["conv1"])
    conv(f"blocks.{i}.conv2", p["conv2"])
    if "shortcut" in p:
      conv(f"blocks.{i}.shortcut", p["shortcut"])
  bn("bn_final", params["bn_final"], stats["bn_final"])
  state["fc.weight"] = np.asarray(params["fc"]["kernel"]).T
  state["fc.bias"] = np.asarray(params["fc"]["bias"])
  tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}
  missing, unexpected = model.load_state_dict(tensors, strict=False)
  assert not unexpected and set(missing) <= {"mean", "std"} | {
      k for k in model.state_dict() if k.endswith("num_batches_tracked")}, missing
  return model


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (optional)")
def test_torch_wrn_has_the_papers_parameter_counts():
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel
  assert torch_reference.count_params(torch_reference.create_model("wrn-40-2")) == 2_243_546
  assert torch_reference.count_params(torch_reference.create_model("wrn-16-2")) == 691_674


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (optional)")
def test_torch_wrn_is_our_wrn(name="wrn-10-1"):
  """Same variables, same logits, in eval and in train mode (WRN-10-1 has both kinds of
  block: with and without the 1x1 shortcut)."""
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel
  ours = create_model(name)
  variables = init_variables(ours, jax.random.key(0))
  # Non-trivial BatchNorm statistics, so eval mode is tested too.
  rng = np.random.default_rng(0)
  variables = dict(variables)
  variables["batch_stats"] = jax.tree.map(
      lambda v: np.asarray(v) + rng.uniform(0.1, 0.5, v.shape).astype(np.float32),
      variables["batch_stats"])
  theirs = _to_torch(torch_reference.create_model(name), variables)
  assert torch_reference.count_params(theirs) == count_params(variables["params"])
  x = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
  x_torch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  for train in (False, True):
    if train:
      expected, _ = ours.apply(variables, x, train=True, mutable=["batch_stats"])
    else:
      expected = ours.apply(variables, x, train=False)
    expected = np.asarray(expected)
    theirs.train(train)
    with torch.no_grad():
      got = theirs(x_torch).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (optional)")
def test_torch_reference_benchmark_runs():
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel
  out = torch_reference.benchmark(teacher="wrn-10-1", student="wrn-10-1", batch=8, pgd_batch=8,
                                  pgd_steps=2, steps=1, repeats=1, warmup_s=0.0, threads=1)
  assert set(out) == {"kd_step_fp32", "kd_step_bf16", "kd_step_fickle", "kd_step_softrand",
                      "pgd20_fp32", "pgd20_bf16"}
  assert all(r["img_per_s"] > 0 for r in out.values())
