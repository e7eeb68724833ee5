"""Throughput of the pieces that decide how long the paper's experiments take.

  python -m benchmarks.bench [--json=PATH] [--torch_reference] [--quick] [--only=ROW,ROW]
                             [--steps=S] [--repeats=R] [--epoch_images=N] [--pgd_batch=B]
  python -m benchmarks.bench --report=DIR (--data_dir=D | --cifar10_npz=NPZ) [--quick]
  (or: nkd-bench ...)

Rows (img/s, median over --repeats timings (default 5, the epoch row 3), each after a warm-up
that compiles and then runs for 2 seconds; a KD timing is --steps=20 steps):
  kd_step_fp32      the KD train step: WRN-40-2 teacher forward + WRN-16-2 forward, backward
                    and SGD update, batch 128, float32 (nkd.training.steps.make_train_step,
                    with its on-device batch gather, crop and flip)
  kd_step_bf16      the same in bfloat16 (--dtype=bfloat16: parameters stay float32)
  kd_step_fickle    the Fickle Teacher: a teacher with dropout 0.3 kept in dropout mode
  kd_step_softrand  Soft Randomization: Gaussian noise (s=0.05) on the student's input
  epoch             one whole epoch as nkd.training.loop runs it: the epoch's permutation, then
                    every step over a 50,000-image synthetic set held on the device, metrics
                    fetched every 100 steps (float32 KD step)
  pgd20_fp32        PGD-20 (eps 0.031, step 0.003, random start) on a WRN-16-2 at batch 1000,
                    with nkd.evaluation.pgd.pgd_attack; img/s = attacked images per second
  pgd20_bf16        the same with a bfloat16 model

--quick shrinks everything (WRN-10-1 models, batch 32, a 256-image epoch, PGD-2 at batch 64,
2 timings of 2 steps) so a test runs it in seconds; its numbers mean nothing. --torch_reference
also times benchmarks/torch_reference.py (our eager PyTorch version of the same step and
attack) on the same device and prints the ratios JAX / PyTorch. JAX is set up as for a training
run (nkd.pipeline.setup_jax): GPU programs use --xla_gpu_deterministic_ops unless
--gpu_deterministic=false. The device, package versions and every setting go into the JSON.
Run it alone on the machine: anything else running skews it.

--report=DIR runs the whole GPU report instead (benchmarks/report.py: these rows, CIFAR-10
teacher / student / KD runs, a 4-run sweep, determinism, bfloat16) and writes DIR/report.md
and DIR/report.json; see BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import flags

from benchmarks import report
from nkd import cli
from nkd import config as config_lib
from nkd import fileio
from nkd import keys as keys_lib
from nkd import pipeline
from nkd.devices import environment as run_environment
from nkd.devices import make_mesh
from nkd.evaluation import autoattack, pgd, predict, smoothing
from nkd.models import create_model
from nkd.models.wrn import init_variables
from nkd.training.state import create_train_state, make_optimizer
from nkd.training.steps import StepSpec, make_train_step, replicate

PROG = "benchmarks.bench"
# --help's areas.
SECTIONS = (
    ("rows and sizes", ("only", "quick", "steps", "repeats", "epoch_images", "pgd_batch")),
    ("output", ("json", "torch_reference")),
    ("the GPU report", ("report", "data_dir", "cifar10_npz", "time_limit_s")),
    ("device", ("gpu_deterministic",)),
)
ROWS = (
    "kd_step_fp32",
    "kd_step_bf16",
    "kd_step_fickle",
    "kd_step_softrand",
    "epoch",
    "pgd20_fp32",
    "pgd20_bf16",
    "apgd_ce_fp32",
    "square_fp32",
    "smoothing_fp32",
)
DESCRIPTIONS = {
    "kd_step_fp32": "KD step, T fwd + S step, fp32",
    "kd_step_bf16": "KD step, bfloat16",
    "kd_step_fickle": "KD step, Fickle teacher (dropout 0.3)",
    "kd_step_softrand": "KD step, Soft Randomization (s=0.05)",
    "epoch": "whole epoch (permutation + steps + fetches)",
    "pgd20_fp32": "PGD attack on the student, fp32",
    "pgd20_bf16": "PGD attack on the student, bfloat16",
    "apgd_ce_fp32": "APGD-CE, PGD's iteration count, fp32",
    "square_fp32": "Square attack, PGD's count as queries, fp32",
    "smoothing_fp32": "smoothing: noisy forward passes (CERTIFY sampling)",
}
# ANCHORS.md, "Speed to beat" (one H200): the numbers this benchmark is compared with.
ANCHORS_H200 = {
    "kd_step_fp32": {"pytorch_eager": 9600, "plain_flax_jit": "33000-40000"},
    "pgd20_fp32": {"pytorch": 5100, "plain_jax": 11100},
    "pgd20_bf16": {"pytorch": 7100, "plain_jax": 18000},
    "four_processes_kd": 86000,
}


@dataclasses.dataclass(frozen=True)
class Settings:
  teacher: str = "wrn-40-2"
  student: str = "wrn-16-2"
  batch: int = 128
  epoch_images: int = 50_000
  pgd_batch: int = 1000
  pgd_steps: int = 20
  smoothing_batch: int = 1000  # noisy copies per forward pass
  steps: int = 20  # train steps per timing
  repeats: int = 5  # timings per row (the median is reported)
  epoch_repeats: int = 3
  warmup_s: float = 2.0  # warm-up: compile, then calls for at least this long
  quick: bool = False

  @classmethod
  def quick_settings(cls) -> "Settings":
    return cls(
        teacher="wrn-10-1",
        student="wrn-10-1",
        batch=32,
        epoch_images=256,
        pgd_batch=64,
        pgd_steps=2,
        smoothing_batch=64,
        steps=2,
        repeats=2,
        epoch_repeats=1,
        warmup_s=0.2,
        quick=True,
    )


class BenchError(Exception):
  pass


def _median_rate(times: Sequence[float], images: int) -> dict[str, Any]:
  median = statistics.median(times)
  return {
      "img_per_s": images / median,
      "median_s": median,
      "times_s": list(times),
      "images_per_timing": images,
      "spread": max(times) / min(times),
  }


def _config(settings: Settings, **overrides) -> config_lib.Config:
  """The options of the distillation run a KD row times (its teacher is never read)."""
  values = dict(
      dataset="synthetic",
      model=settings.student,
      batch_size=settings.batch,
      epochs=1,
      mode="kd",
      teacher_workdir="unused",
      synthetic_train_size=settings.epoch_images,
  )
  values.update(overrides)
  return config_lib.resolve(config_lib.Config(**values))


class _Data:
  """A synthetic training set on the device (the bytes do not change the speed)."""

  def __init__(self, settings: Settings, mesh):
    rng = np.random.default_rng(0)
    n = settings.epoch_images
    self.n = n
    self.images, self.labels = replicate(
        (
            rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.int32),
        ),
        mesh,
    )


def _kd_run(
    settings: Settings, data: _Data, mesh, *, dtype="float32", fickle=False, input_noise_sigma=0.0
) -> tuple[Callable[..., Any], Callable[[int], jax.Array]]:
  """(run, epoch_order) of a KD run built as the loop builds it.

  `run(n, order, fetch_every=0)` takes n train steps over `order` and returns what to wait for;
  with `fetch_every` it fetches the metrics every that many steps and at the end, as the loop
  does. `epoch_order(epoch)` is the epoch's permutation of the training set."""
  config = _config(
      settings, dtype=dtype, fickle_teacher=fickle, input_noise_sigma=input_noise_sigma
  )
  steps_per_epoch = data.n // settings.batch
  keys = keys_lib.run_keys(0)
  student = create_model(settings.student, dtype=dtype)
  teacher = create_model(settings.teacher, dropout_rate=0.3 if fickle else 0.0, dtype=dtype)
  state = create_train_state(student, keys["init"], make_optimizer(config, steps_per_epoch))
  teacher_vars = init_variables(teacher, jax.random.key(1))
  state, teacher_vars = replicate((state, teacher_vars), mesh)
  step = make_train_step(student, StepSpec.from_config(config, steps_per_epoch), mesh, teacher)

  def run(n: int, order: jax.Array, fetch_every: int = 0):
    nonlocal state
    pending, fetched = [], []
    for i in range(n):
      state, metrics = step(state, teacher_vars, data.images, data.labels, order, keys["train"])
      pending.append(metrics)
      if fetch_every and ((i + 1) % fetch_every == 0 or i + 1 == n):
        fetched += jax.device_get(pending)
        pending = []
    return state, pending, fetched

  def epoch_order(epoch: int) -> jax.Array:
    return keys_lib.epoch_permutation(keys["data"], epoch, data.n)

  return run, epoch_order


def _timings(
    timed: Callable[[int], Any], settings: Settings, repeats: int, warm: Callable[[], Any]
) -> list[float]:
  """Seconds of `timed(1)` .. `timed(repeats)`, each waited for, after a warm-up: `warm()`
  once (it compiles), then for at least settings.warmup_s seconds (first calls and an idle
  CPU or GPU are slow)."""
  jax.block_until_ready(warm())
  start, done = time.perf_counter(), 0
  while done < 1 or time.perf_counter() - start < settings.warmup_s:
    jax.block_until_ready(warm())
    done += 1
  times = []
  for r in range(1, repeats + 1):
    start = time.perf_counter()
    jax.block_until_ready(timed(r))
    times.append(time.perf_counter() - start)
  return times


def bench_kd_step(settings: Settings, data: _Data, mesh, **kwargs) -> dict[str, Any]:
  run, epoch_order = _kd_run(settings, data, mesh, **kwargs)
  order = epoch_order(0)
  times = _timings(
      lambda _: run(settings.steps, order), settings, settings.repeats, warm=lambda: run(1, order)
  )
  return _median_rate(times, settings.steps * settings.batch)


def bench_epoch(settings: Settings, data: _Data, mesh, log_every: int = 100) -> dict[str, Any]:
  """Epochs 1, 2, ...: each one's permutation, its steps and the metric fetches."""
  run, epoch_order = _kd_run(settings, data, mesh)
  steps_per_epoch = data.n // settings.batch
  first = epoch_order(0)  # the warm-up compiles the step and the permutation
  times = _timings(
      lambda epoch: run(steps_per_epoch, epoch_order(epoch), log_every),
      settings,
      settings.epoch_repeats,
      warm=lambda: run(1, first),
  )
  out = _median_rate(times, steps_per_epoch * settings.batch)
  out["epoch_s"] = out["median_s"]
  out["steps_per_epoch"] = steps_per_epoch
  return out


def bench_pgd(settings: Settings, *, dtype="float32") -> dict[str, Any]:
  model = create_model(settings.student, dtype=dtype)
  variables = init_variables(model, jax.random.key(2))
  apply_fn = predict.eval_apply_fn(model)
  rng = np.random.default_rng(1)
  images = jax.device_put(rng.integers(0, 256, (settings.pgd_batch, 32, 32, 3), np.uint8))
  labels = jax.device_put(rng.integers(0, 10, settings.pgd_batch, np.int32))

  def attack(i):
    return pgd.pgd_attack(
        apply_fn,
        variables,
        jax.random.key(i),
        images,
        labels,
        eps=0.031,
        step_size=0.003,
        steps=settings.pgd_steps,
    )

  times = _timings(attack, settings, settings.repeats, warm=lambda: attack(0))
  return _median_rate(times, settings.pgd_batch)


def bench_autoattack_stage(settings: Settings, stage: str) -> dict[str, Any]:
  """APGD-CE (n_iter = --pgd_steps, one forward and backward each, like PGD) or Square
  (queries = --pgd_steps, one forward each) on the student at --pgd_batch; img/s = attacked
  images per second, so apgd_ce_fp32 / pgd20_fp32 is APGD's cost per iteration relative to
  PGD's."""
  model = create_model(settings.student)
  variables = init_variables(model, jax.random.key(2))
  apply_fn = predict.eval_apply_fn(model)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (settings.pgd_batch, 32, 32, 3), np.uint8)
  labels = rng.integers(0, 10, settings.pgd_batch).astype(np.int32)

  def attack(i):
    if stage == "apgd":
      return autoattack.apgd_attack(
          apply_fn,
          variables,
          jax.random.key(i),
          images,
          labels,
          eps=0.031,
          n_iter=settings.pgd_steps,
      )["adversarial"]
    return autoattack.square_attack(
        apply_fn,
        variables,
        jax.random.key(i),
        images,
        labels,
        eps=0.031,
        n_queries=settings.pgd_steps,
    )["adversarial"]

  times = _timings(attack, settings, settings.repeats, warm=lambda: attack(0))
  return _median_rate(times, settings.pgd_batch)


def bench_smoothing(settings: Settings, *, dtype="float32") -> dict[str, Any]:
  """Noisy forward passes per second of the student under CERTIFY's sampling: one image,
  `smoothing_batch` draws per call (noise generated, classified and counted on the device).
  The img/s column counts forward passes."""
  model = create_model(settings.student)
  variables = init_variables(model, jax.random.key(3))
  apply_fn = smoothing.smoothing_apply_fn(model, dtype)
  image = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), np.uint8)
  num = settings.smoothing_batch * settings.steps

  def sample(i):
    return smoothing.count_draws(
        apply_fn,
        variables,
        jax.random.key(i),
        image,
        [0],
        sigma=0.25,
        num=num,
        batch_size=settings.smoothing_batch,
        dtype=dtype,
    )

  times = _timings(sample, settings, settings.repeats, warm=lambda: sample(0))
  return _median_rate(times, num)


def run_rows(
    settings: Settings, rows: Sequence[str], say: Callable[[str], None] = lambda s: None
) -> dict[str, dict[str, Any]]:
  mesh = make_mesh()
  data = _Data(settings, mesh) if any(r.startswith(("kd", "epoch")) for r in rows) else None
  runners = {
      "kd_step_fp32": lambda: bench_kd_step(settings, data, mesh),
      "kd_step_bf16": lambda: bench_kd_step(settings, data, mesh, dtype="bfloat16"),
      "kd_step_fickle": lambda: bench_kd_step(settings, data, mesh, fickle=True),
      "kd_step_softrand": lambda: bench_kd_step(settings, data, mesh, input_noise_sigma=0.05),
      "epoch": lambda: bench_epoch(settings, data, mesh),
      "pgd20_fp32": lambda: bench_pgd(settings),
      "pgd20_bf16": lambda: bench_pgd(settings, dtype="bfloat16"),
      "apgd_ce_fp32": lambda: bench_autoattack_stage(settings, "apgd"),
      "square_fp32": lambda: bench_autoattack_stage(settings, "square"),
      "smoothing_fp32": lambda: bench_smoothing(settings),
  }
  out = {}
  for row in rows:
    start = time.perf_counter()
    out[row] = runners[row]()
    out[row]["total_s"] = time.perf_counter() - start
    say(f"{row}: {out[row]['img_per_s']:.1f} img/s ({out[row]['total_s']:.0f}s with warm-up)")
  return out


def environment() -> dict[str, Any]:
  env = run_environment()
  env["device_kind"] = jax.devices()[0].device_kind
  env["cpu_count"] = os.cpu_count()
  return env


def torch_reference(settings: Settings, rows: Sequence[str]) -> dict[str, Any]:
  """The PyTorch rows, or {'error': why} where PyTorch cannot run."""
  try:  # PyTorch is optional: imported only here.
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks import torch_reference as ref  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return {
        "error": f"PyTorch is not importable ({e}); install it to compare (it is not a "
        f"requirement of nkd)"
    }
  jax_platform = jax.devices()[0].platform
  torch_device = ref.default_device().type
  if (jax_platform == "gpu") != (torch_device == "cuda"):
    return {
        "error": f"PyTorch runs on {torch_device} but JAX on {jax_platform}: no "
        f"same-device comparison"
    }
  torch_rows = tuple(r for r in rows if r != "epoch")
  results = ref.benchmark(
      teacher=settings.teacher,
      student=settings.student,
      batch=settings.batch,
      pgd_batch=settings.pgd_batch,
      pgd_steps=settings.pgd_steps,
      steps=settings.steps,
      repeats=settings.repeats,
      warmup_s=settings.warmup_s,
      rows=torch_rows,
  )
  return {
      "version": torch.__version__,
      "device": str(ref.default_device()),
      "threads": torch.get_num_threads(),
      "rows": results,
  }


def format_table(result: dict[str, Any]) -> str:
  rows = result["rows"]
  torch_rows = (result.get("torch_reference") or {}).get("rows", {})
  lines = [
      f"{PROG} on {result['environment']['device']} "
      f"({result['environment']['device_count']} device(s)); jax "
      f"{result['environment']['versions']['jax']}"
      + ("; QUICK: tiny models, numbers mean nothing" if result["settings"]["quick"] else "")
  ]
  header = f"{'row':<17} {'what':<44} {'img/s':>10}" + (
      f" {'torch img/s':>12} {'jax/torch':>9}" if torch_rows else ""
  )
  lines += [header, "-" * len(header)]
  for name, row in rows.items():
    line = f"{name:<17} {DESCRIPTIONS[name]:<44} {row['img_per_s']:>10.1f}"
    if torch_rows:
      t = torch_rows.get(name)
      line += (
          f" {t['img_per_s']:>12.1f} {row['img_per_s'] / t['img_per_s']:>8.2f}x"
          if t
          else f" {'-':>12} {'-':>9}"
      )
    lines.append(line)
  if "error" in (result.get("torch_reference") or {}):
    lines.append(f"torch reference: {result['torch_reference']['error']}")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues) -> None:
  """The benchmark's flags; --gpu_deterministic is a run's own option (nkd.config)."""
  flags.DEFINE_string("json", "", "Also write the results as JSON here.", flag_values=fv)
  flags.DEFINE_bool(
      "torch_reference",
      False,
      "Also time benchmarks/torch_reference.py " "(needs PyTorch).",
      flag_values=fv,
  )
  flags.DEFINE_bool(
      "quick", False, "Tiny sizes, for tests; the numbers mean nothing.", flag_values=fv
  )
  flags.DEFINE_list("only", [], f"Rows to run, of {', '.join(ROWS)}; default: all.", flag_values=fv)
  flags.DEFINE_integer("steps", None, "Train steps per timing.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer(
      "repeats", None, "Timings per row (the median is reported).", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
      "epoch_images", None, "Images of the epoch row.", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
      "pgd_batch",
      None,
      "Batch of the PGD rows (default 1000; smaller for " "a slow CPU).",
      lower_bound=1,
      flag_values=fv,
  )
  flags.DEFINE_string(
      "report",
      "",
      "Run the whole GPU report into this new folder instead "
      "(benchmarks/report.py): the rows, CIFAR-10 runs, a sweep, determinism, "
      "bfloat16; writes DIR/report.md and DIR/report.json.",
      flag_values=fv,
  )
  flags.DEFINE_string(
      "data_dir",
      "",
      "With --report: CIFAR-10 here (cifar-10-batches-py/ or " "the tarball).",
      flag_values=fv,
  )
  flags.DEFINE_string(
      "cifar10_npz",
      "",
      "With --report: CIFAR-10 from this cifar10_jpeg.npz "
      "(the offline JPEG copy), converted into DIR/data.",
      flag_values=fv,
  )
  flags.DEFINE_float(
      "time_limit_s",
      None,
      "With --report: stop stages at this many seconds in "
      "all (default 540 for the full report, none with --quick; 0: none).",
      flag_values=fv,
  )
  config_lib.define_flags(fv, names=["gpu_deterministic"])


def parse_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, Settings, tuple[str, ...]]:
  """(parsed flags, settings, rows) from the arguments after the program name; BenchError
  says what is wrong in one line."""
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  try:
    rest = flag_values([PROG, *argv])[1:]
  except flags.Error as e:
    raise BenchError(cli.flag_error(e, flag_values)) from None
  if rest:
    raise BenchError(f"unexpected arguments {' '.join(rest)}; options are --flags")
  if not flag_values.report:
    given = [n for n in ("data_dir", "cifar10_npz", "time_limit_s") if flag_values[n].present]
    if given:
      raise BenchError(f"--{given[0]} is an option of --report=DIR")
  else:
    given = [
        n
        for n in (
            "json",
            "only",
            "steps",
            "repeats",
            "epoch_images",
            "pgd_batch",
            "torch_reference",
        )
        if flag_values[n].present
    ]
    if given:
      raise BenchError(
          f"--{given[0]} is not used with --report (the report chooses the rows "
          f"and sizes itself)"
      )
  rows = tuple(flag_values.only) or ROWS
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise BenchError(f"--only: unknown row {unknown[0]!r}; rows are {', '.join(ROWS)}")
  settings = Settings.quick_settings() if flag_values.quick else Settings()
  changes = {
      k: flag_values[k].value
      for k in ("steps", "repeats", "epoch_images", "pgd_batch")
      if flag_values[k].value is not None
  }
  if "repeats" in changes:
    changes["epoch_repeats"] = min(settings.epoch_repeats, changes["repeats"])
  settings = dataclasses.replace(settings, **changes)
  if settings.epoch_images < settings.batch:
    raise BenchError(
        f"--epoch_images={settings.epoch_images}: expected at least one batch "
        f"({settings.batch})"
    )
  return flag_values, settings, rows


def _report(flag_values: flags.FlagValues, argv: Sequence[str], say: Callable[[str], None]) -> int:
  """--report=DIR: benchmarks/report.py in this process (which starts no JAX backend: every
  stage is a child process). Exit 0 if every stage finished, 1 if one did not, 2 bad input."""
  try:
    result = report.run_report(
        flag_values.report,
        quick=flag_values.quick,
        data_dir=flag_values.data_dir,
        npz=flag_values.cifar10_npz,
        time_limit_s=flag_values.time_limit_s,
        argv=list(argv),
        say=say,
    )
  except report.ReportError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2
  with open(os.path.join(flag_values.report, report.REPORT_MD)) as f:
    print(f.read(), end="", flush=True)
  return 0 if all(s["status"] == "ok" for s in result["stages"].values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the benchmark; `argv` without the program name (default: sys.argv's). Returns the
  exit status. Also the console script `nkd-bench`."""
  argv = sys.argv[1:] if argv is None else argv
  request = cli.help_request(argv)
  if request:
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    cli.print_help(cli.help_text(__doc__, flag_values, SECTIONS, full=request == "full"))
    return 0
  try:
    flag_values, settings, rows = parse_flags(argv)
  except BenchError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2
  say = lambda s: print(f"[{PROG}] {s}", file=sys.stderr, flush=True)  # noqa: E731
  if flag_values.report:
    return _report(flag_values, argv, say)
  # Before the backend starts, as for a run: the timed programs are the ones training runs.
  pipeline.setup_jax(config_lib.Config(gpu_deterministic=flag_values.gpu_deterministic))
  env = environment()
  say(f"{env['device']} x{env['device_count']}, rows: {', '.join(rows)}")
  result = {
      "environment": env,
      "settings": {
          **dataclasses.asdict(settings),
          "gpu_deterministic": flag_values.gpu_deterministic,
      },
      "rows": run_rows(settings, rows, say),
      "anchors_h200": ANCHORS_H200,
  }
  if flag_values.torch_reference:
    say("PyTorch reference ...")
    result["torch_reference"] = torch_reference(settings, rows)
    for name, t in result["torch_reference"].get("rows", {}).items():
      result["rows"][name]["torch_img_per_s"] = t["img_per_s"]
      result["rows"][name]["jax_over_torch"] = result["rows"][name]["img_per_s"] / t["img_per_s"]
  print(format_table(result), flush=True)
  if flag_values.json:
    fileio.write_json(flag_values.json, result)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
