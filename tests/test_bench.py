"""benchmarks.bench --quick prints a well-formed table and writes well-formed JSON; the PyTorch
reference (where PyTorch is installed) is the same network as ours and its benchmark runs."""

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from helpers import HAS_TORCH, REPO, fast_compile_flags, needs_torch, once_per_session

from benchmarks import bench
from nkd.models import count_params, create_model
from nkd.models.wrn import init_variables


def test_bad_arguments_are_one_line(capsys):
  for argv, fragment in (
      (["--only=kd_step,epoch"], "unknown row 'kd_step'"),
      (["--steps=0"], "--steps=0: 0 is not a positive integer"),
      (["--quick", "--epoch_images=8"], "at least one batch"),
      (["--bogus"], "unknown option --bogus"),
      (["--quik"], "unknown option --quik (did you mean --quick?)"),
      (["--quick", "epoch"], "unexpected arguments epoch"),
  ):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("benchmarks.bench: error: ")
    assert fragment in err[0]


def test_flags_make_the_settings():
  flag_values, settings, rows = bench.parse_flags(
      ["--quick", "--only=epoch,pgd20_fp32", "--repeats=7", "--nogpu_deterministic"]
  )
  assert rows == ("epoch", "pgd20_fp32") and not flag_values.gpu_deterministic
  assert settings.quick and settings.repeats == 7 and settings.epoch_repeats == 1
  _, settings, rows = bench.parse_flags([])
  assert rows == bench.ROWS and settings == bench.Settings()


def test_torch_reference_without_torch_says_so(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  out = bench.torch_reference(bench.Settings.quick_settings(), bench.ROWS)
  assert set(out) == {"error"} and "PyTorch is not importable" in out["error"]
  table = bench.format_table(
      {
          "environment": {"device": "cpu:cpu", "device_count": 1, "versions": {"jax": "x"}},
          "settings": {"quick": True},
          "rows": {"epoch": {"img_per_s": 1.0}},
          "torch_reference": out,
      }
  )
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
  blocks = sorted(
      (k for k in params if k.startswith("group")),
      key=lambda k: (int(k[5]), int(k.split("block")[1])),
  )
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
      k for k in model.state_dict() if k.endswith("num_batches_tracked")
  }, missing
  return model


@needs_torch
def test_torch_wrn_has_the_papers_parameter_counts():
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

  assert torch_reference.count_params(torch_reference.create_model("wrn-40-2")) == 2_243_546
  assert torch_reference.count_params(torch_reference.create_model("wrn-16-2")) == 691_674


@needs_torch
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
      variables["batch_stats"],
  )
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


@needs_torch
def test_torch_reference_benchmark_runs():
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

  out = torch_reference.benchmark(
      teacher="wrn-10-1",
      student="wrn-10-1",
      batch=8,
      pgd_batch=8,
      pgd_steps=2,
      steps=1,
      repeats=1,
      warmup_s=0.0,
      threads=1,
  )
  assert set(out) == {
      "kd_step_fp32",
      "kd_step_bf16",
      "kd_step_fickle",
      "kd_step_softrand",
      "pgd20_fp32",
      "pgd20_bf16",
      "apgd_ce_fp32",
  }
  assert all(r["img_per_s"] > 0 for r in out.values())


@needs_torch
def test_torch_apgd_stays_in_the_ball_and_fools_a_weak_model():
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  model = torch_reference.create_model("wrn-10-1")
  images = torch.rand(16, 3, 32, 32)
  labels = model.eval()(images).argmax(1)  # every point correct before the attack
  eps = 8 / 255
  adv = torch_reference.make_apgd(model, eps=eps, n_iter=10)(images, labels)
  assert float((adv - images).abs().max()) <= eps + 1e-6
  assert float(adv.min()) >= 0 and float(adv.max()) <= 1
  # An untrained WRN's decisions are fragile: APGD flips most of them.
  assert float((model(adv).argmax(1) != labels).float().mean()) > 0.5


# ---------------------------------------------------------------------------------------------
# The GPU report (benchmarks/report.py): --report --quick runs every stage on a CPU.


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
  """`--report=DIR --quick`, run once per test session (its tests may sit in two workers):
  (its exit code, stdout and stderr; DIR; report.json)."""

  def build(folder):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", f"--report={folder / 'out'}", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": fast_compile_flags()},
    )
    (folder / "process.json").write_text(json.dumps(vars(proc) | {"args": None}))

  folder = once_per_session(tmp_path_factory, "quick_report", build)
  proc = types.SimpleNamespace(**json.loads((folder / "process.json").read_text()))
  out = folder / "out"
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc, out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def quick(quick_report):
  """`benchmarks.bench --quick` as the report's bench stage ran it (every row, with PyTorch's
  columns where it is installed): (the table it printed, its JSON)."""
  _, out, report = quick_report
  stage = report["stages"]["bench"]["result"]
  log = (out / stage["process"]["log"]).read_text()
  return log[log.index("benchmarks.bench on cpu:") :], json.loads((out / stage["json"]).read_text())


def test_quick_table_has_every_row(quick):
  table, _ = quick
  lines = table.strip().splitlines()
  assert lines[0].startswith("benchmarks.bench on cpu:") and "QUICK" in lines[0]
  assert lines[1].split()[:3] == ["row", "what", "img/s"] and set(lines[2]) == {"-"}
  rows = lines[3:]
  assert [r.split()[0] for r in rows] == list(bench.ROWS)
  for r in rows:  # img/s, then PyTorch's img/s and the ratio where PyTorch ran
    assert float(r.split()[-3 if HAS_TORCH else -1]) > 0


def test_quick_json_is_well_formed(quick):
  _, result = quick
  torch = {"torch_reference"} if HAS_TORCH else set()  # the stage passes --torch_reference
  assert set(result) == {"environment", "settings", "rows", "anchors_h200", *torch}
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


def test_quick_report_runs_every_stage(quick_report):
  proc, out, report = quick_report
  from benchmarks import report as report_lib  # pylint: disable=import-outside-toplevel

  markdown = (out / "report.md").read_text()
  assert proc.stdout == markdown
  assert report["quick"] and report["command"] == "python -m benchmarks.bench --report=DIR --quick"
  assert report["stage_order"] == list(report_lib.STAGES)  # report.json's keys are sorted
  assert sorted(report["stages"]) == sorted(report_lib.STAGES)
  table = [
      line.split("|")[1].strip()
      for line in markdown.split("## Stages")[1].splitlines()
      if line.startswith("| ") and "stage" not in line
  ]
  assert table[: len(report_lib.STAGES)] == list(report_lib.STAGES)
  for name, stage in report["stages"].items():
    assert stage["status"] == "ok", (name, stage.get("error"))
    assert stage["budget_s"] > 0 and stage["wall_time_s"] > 0
    assert f"| {name} | ok | " in markdown
  for heading in (
      "## Stages",
      "## Benchmark rows",
      "## Teacher, student, KD",
      "## Sweep: 2 KD",
      "## Determinism",
      "## bfloat16 against float32",
  ):
    assert heading in markdown
  assert report["environment"]["packages"]["jax"] and report["data"]["dataset"] == "synthetic"
  assert str(out) not in markdown  # the folder is DIR


def test_quick_report_bench_rows(quick_report):
  _, out, report = quick_report
  bench_stage = report["stages"]["bench"]["result"]
  assert sorted(bench_stage["rows"]) == sorted(bench.ROWS)
  assert all(r["img_per_s"] > 0 for r in bench_stage["rows"].values())
  assert bench_stage["torch_reference"] == HAS_TORCH
  assert json.loads((out / bench_stage["json"]).read_text())["settings"]["quick"]


def test_quick_report_trains_teacher_student_and_kd(quick_report):
  _, out, report = quick_report
  runs = {name: report["stages"][name]["result"]["run"] for name in ("teacher", "student", "kd")}
  for name, run in runs.items():
    results = json.loads((out / run["workdir"] / "results.json").read_text())
    assert results["params_sha256"] == run["params_sha256"]
    assert run["test_accuracy"] == results["test_accuracy"] and run["train_wall_s"] > 0
    assert run["process_wall_s"] >= run["train_wall_s"] and run["img_per_s"] > 0
    assert (out / run["log"]).exists() and run["epochs"] == 1 and run["model"] == "wrn-10-1"
  kd = json.loads((out / runs["kd"]["workdir"] / "results.json").read_text())
  assert kd["mode"] == "kd"
  assert os.path.samefile(kd["teacher"]["workdir"], out / runs["teacher"]["workdir"])


def test_quick_report_sweep_aggregates_its_runs(quick_report):
  _, out, report = quick_report
  sweep = report["stages"]["sweep"]["result"]
  assert sweep["parallel"] == 2 and [r["status"] for r in sweep["runs"]] == ["ok"] * 2
  assert json.loads((out / sweep["sweep_json"]).read_text())["parallel"] == 2
  assert sweep["aggregate_img_per_s_steady"] == pytest.approx(
      sum(r["img_per_s"] for r in sweep["runs"])
  )
  assert sweep["images"] == sum(r["steps"] * r["batch_size"] for r in sweep["runs"])
  assert sweep["speedup_over_one_run"] > 0


def test_quick_report_determinism_hashes_are_equal(quick_report):
  """The two deterministic runs are separate processes in separate folders whose final
  parameters are bit-identical; on a CPU the flag changes nothing, and the report says so."""
  _, out, report = quick_report
  det = report["stages"]["determinism"]["result"]
  hashes = {
      name: json.loads((out / run["workdir"] / "results.json").read_text())["params_sha256"]
      for name, run in det["runs"].items()
  }
  assert len({run["workdir"] for run in det["runs"].values()}) == 3
  assert hashes["deterministic_1"] == hashes["deterministic_2"]
  assert det["deterministic_hashes_equal"]
  assert [r["gpu_deterministic"] for r in det["runs"].values()] == [True, True, False]
  assert det["note"].startswith("on a CPU --gpu_deterministic changes nothing")
  assert det["nondeterministic_hash_equal"]  # CPU: the same programs, the same bits
  assert "params_sha256: **equal**" in (out / "report.md").read_text()


def test_quick_report_bf16_against_fp32(quick_report):
  _, _, report = quick_report
  bf16 = report["stages"]["bf16"]["result"]
  assert bf16["run"]["dtype"] == "bfloat16"
  assert bf16["float32_run"] == report["stages"]["student"]["result"]["run"]["workdir"]
  assert bf16["accuracy_difference"] == pytest.approx(
      bf16["run"]["test_accuracy"] - report["stages"]["student"]["result"]["run"]["test_accuracy"]
  )


def test_report_stages_fail_independently(tmp_path, monkeypatch):
  """A crashing stage, a failing run (reported with its last log line), a stage stopped at
  its time limit, and the stages that need a failed one skipped; the rest go on."""
  from benchmarks import report as report_lib  # pylint: disable=import-outside-toplevel

  def crash(ctx, report):
    raise RuntimeError("crash")

  def bad_flagfile(ctx, report):
    return {"run": report_lib.main_run(ctx, "teacher", "experiments/no_such.flags", [])}

  def sleeps(ctx, report):
    proc = report_lib.run_process(
        ctx, "sleep", [sys.executable, "-c", "import time; time.sleep(120)"]
    )
    # pylint: disable-next=protected-access
    raise report_lib.StageFailed(report_lib._failed("sleep", proc))

  def nothing(ctx, report):
    return {}

  monkeypatch.setattr(
      report_lib,
      "STAGE_FUNCTIONS",
      {
          "bench": crash,
          "teacher": bad_flagfile,
          "student": nothing,
          "kd": nothing,
          "sweep": nothing,
          "determinism": sleeps,
          "bf16": nothing,
      },
  )
  monkeypatch.setattr(
      report_lib,
      "QUICK",
      report_lib.dataclasses.replace(
          report_lib.QUICK,
          budgets_s=tuple((n, 1 if n == "determinism" else 5) for n in report_lib.STAGES),
      ),
  )
  out = tmp_path / "out"
  report = report_lib.run_report(str(out), quick=True, time_limit_s=600)
  status = {n: s["status"] for n, s in report["stages"].items()}
  assert status == {
      "bench": "failed",
      "teacher": "failed",
      "student": "ok",
      "kd": "skipped",
      "sweep": "skipped",
      "determinism": "timed_out",
      "bf16": "ok",
  }
  stages = report["stages"]
  assert stages["bench"]["error"] == "RuntimeError: crash"
  assert stages["teacher"]["error"].startswith("teacher: exit 2: nkd: error:")
  assert "no_such.flags" in stages["teacher"]["error"]
  assert stages["kd"]["error"] == "needs the teacher stage, which did not finish"
  assert stages["determinism"]["wall_time_s"] < 60
  assert stages["determinism"]["error"].startswith("sleep: stopped at the stage's time limit")
  markdown = (out / "report.md").read_text()
  assert "| teacher | failed |" in markdown and "FAILED: teacher: exit 2: nkd: error:" in markdown
  assert json.loads((out / "report.json").read_text())["stages"] == json.loads(json.dumps(stages))


def test_report_bad_arguments_are_one_line(tmp_path, capsys):
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("")
  for argv, fragment in (
      ([f"--report={tmp_path / 'new'}"], "give --data_dir"),
      ([f"--report={tmp_path / 'full'}", "--quick"], "the folder is not empty"),
      ([f"--report={tmp_path / 'new'}", "--quick", "--json=x.json"], "--json is not used with"),
      (
          [f"--report={tmp_path / 'new'}", "--quick", f"--data_dir={tmp_path / 'nope'}"],
          "no such folder",
      ),
      (
          [f"--report={tmp_path / 'new'}", "--quick", f"--cifar10_npz={tmp_path / 'nope.npz'}"],
          "no such file",
      ),
      (["--quick", "--data_dir=x"], "--data_dir is an option of --report=DIR"),
  ):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("benchmarks.bench: error: "), err
    assert fragment in err[0]
  assert not (tmp_path / "new").exists()


def _split_arrays(split, blobs, labels):
  """One split's arrays in cifar10_jpeg.npz's layout: the JPEG files' bytes concatenated, N+1
  offsets, the labels."""
  return {
      f"{split}_jpeg": np.concatenate(blobs),
      f"{split}_offsets": np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64),
      f"{split}_label": labels,
  }


def _fake_npz(path, n_train=10, n_test=5):
  """A cifar10_jpeg.npz in the JPEG copy's layout, of random images."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  arrays, images = {}, {}
  for split, n in (("train", n_train), ("test", n_test)):
    # Smooth images, so JPEG keeps them close.
    imgs = np.repeat(np.repeat(rng.integers(0, 256, (n, 4, 4, 3), np.uint8), 8, 1), 8, 2)
    blobs = []
    for img in imgs:
      buf = io.BytesIO()
      Image.fromarray(img).save(buf, format="JPEG", quality=95)
      blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    arrays.update(_split_arrays(split, blobs, (np.arange(n) % 10).astype(np.uint8)))
    images[split] = imgs
  np.savez(path, **arrays)
  return images


def test_cifar10_npz_converts_to_the_official_format(tmp_path):
  from benchmarks import cifar10_npz  # pylint: disable=import-outside-toplevel
  from nkd.data import cifar10  # pylint: disable=import-outside-toplevel

  images = _fake_npz(tmp_path / "c.npz")
  folder = cifar10_npz.write_python_folder(
      str(tmp_path / "c.npz"), str(tmp_path / "data"), workers=1
  )
  assert sorted(os.listdir(folder)) == sorted(
      [*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, "batches.meta"]
  )
  data = cifar10.load_python_folder(folder)
  assert data.train_images.shape == (10, 32, 32, 3) and data.test_images.shape == (5, 32, 32, 3)
  assert data.train_labels.tolist() == list(range(10)) and data.test_labels.tolist() == [
      0,
      1,
      2,
      3,
      4,
  ]
  for got, want in ((data.train_images, images["train"]), (data.test_images, images["test"])):
    assert np.abs(got.astype(int) - want).mean() < 8  # JPEG: close, not equal
  with pytest.raises(cifar10_npz.NpzError, match="no array 'train_jpeg'"):
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    cifar10_npz.write_python_folder(str(tmp_path / "bad.npz"), str(tmp_path / "bad"))


def _npz_slice(src, dst, step):
  """Every `step`-th image of each split of a cifar10_jpeg.npz, in its layout."""
  arrays = {}
  with np.load(src) as z:
    for split in ("train", "test"):
      jpeg, offsets = z[f"{split}_jpeg"], z[f"{split}_offsets"]
      keep = range(0, len(offsets) - 1, step)
      blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in keep]
      arrays.update(_split_arrays(split, blobs, z[f"{split}_label"][::step]))
  np.savez(dst, **arrays)


def test_cifar10_npz_matches_the_shared_converter(cifar10_shared, cifar10_official, tmp_path):
  """Our converter gives the same arrays as ../shared's make_cifar10_python.py, on every 25th
  image of the real JPEG copy (2,000 training and 400 test images: decoding all 60,000 again
  cost about 25 s of CPU, and the conversion is image by image)."""
  from benchmarks import cifar10_npz  # pylint: disable=import-outside-toplevel
  from nkd.data import cifar10  # pylint: disable=import-outside-toplevel

  step = 25
  _npz_slice(cifar10_shared / "cifar10_jpeg.npz", tmp_path / "slice.npz", step)
  ours = cifar10.load_python_folder(
      cifar10_npz.write_python_folder(str(tmp_path / "slice.npz"), str(tmp_path / "ours"))
  )
  ref = cifar10.load_python_folder(str(cifar10_official / cifar10.FOLDER))
  assert len(ours.train_images) == 2000 and len(ours.test_images) == 400
  for a, b in zip(ours[:4], ref[:4]):
    np.testing.assert_array_equal(a, b[::step])


def test_layers_bad_arguments_are_one_line(capsys):
  from benchmarks import layers

  for argv, fragment in (
      (["--only=32_3-16_3_1,nope"], "unknown layer 'nope'"),
      (["--batch=0"], "--batch"),
      (["--bogus"], "--bogus"),
      (["extra"], "unexpected arguments extra"),
  ):
    assert layers.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("benchmarks.layers: error: ")
    assert fragment in err[0]


def test_layers_times_every_part_of_a_layer():
  from benchmarks import layers

  result = layers.measure("32_32-64_1_2", batch=2, repeats=1)
  assert result["gflop"] == 2 * 2 * 16 * 16 * 32 * 64 / 1e9
  for part in layers.PARTS:
    assert set(result[part]) == {"conv2d", "xla"} and min(result[part].values()) > 0
  table = layers.format_table({"32_32-64_1_2": result}, "cpu:cpu x1").splitlines()
  assert "kernel_grad xla" in table[1] and table[3].startswith("32_32-64_1_2")
