"""The bench's rows: each times one piece (the KD step, an epoch, PGD, an AutoAttack stage,
smoothing's sampling) as `python -m benchmarks.bench` runs it, and returns its img/s."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from nkd import config as config_lib
from nkd import keys as keys_lib
from nkd.devices import make_mesh
from nkd.evaluation import autoattack, pgd, predict, smoothing
from nkd.models import create_model
from nkd.models.wrn import init_variables
from nkd.training.state import create_train_state, make_optimizer
from nkd.training.steps import StepSpec, make_train_step, replicate


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
