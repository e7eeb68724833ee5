"""The epoch loop: one run from its config to its trained variables, resumable at every
checkpoint. It reports what it trained (`Trained`); evaluating and writing results.json is the
pipeline's job (nkd/pipeline.py).

Only one process trains in a run folder (nkd/training/runlock.py). SIGTERM or SIGINT stops the
loop after the step in flight with a checkpoint at that step (nkd/training/preemption.py); the
next run resumes there, mid-epoch too, and ends bit-identical to a run never stopped: the
step's batch and keys derive from the step alone, and the epoch's running loss and accuracy
sums are saved with the checkpoint, so metrics.jsonl is the same too (but for timings)."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from nkd import config as config_lib
from nkd import keys as keys_lib
from nkd import noise
from nkd import run_files
from nkd import tensorboard
from nkd.data import Dataset
from nkd.devices import environment, make_mesh
from nkd.errors import ConfigError, DiskFullError, NonFiniteLossError
from nkd.evaluation import predict
from nkd.models import create_model
from nkd.training import preemption, runlock
from nkd.training.checkpoint import CheckpointError, Checkpointer
from nkd.training.state import create_train_state, make_optimizer
from nkd.training.steps import StepSpec, make_train_step, replicate
from nkd.training.teacher import Teacher


@dataclasses.dataclass
class Trained:
  """What a run trained: its results (without evaluation sections), and, unless the run was
  already finished, its model, final variables and final test logits."""

  results: run_files.RunResults
  model: Any = None
  variables: Any = None
  test_logits: np.ndarray | None = None

  @property
  def finished_before(self) -> bool:
    return self.variables is None


def check_workdir(config, fingerprint: str) -> run_files.RunResults | None:
  """Returns the results of a finished identical run; raises if the folder holds another run."""
  config_path = os.path.join(config.workdir, run_files.CONFIG)
  if not os.path.exists(config_path):
    return None
  stored = run_files.read_json(config_path)
  ours, theirs = {**config_lib.RETIRED, **config.semantic_dict()}, stored.get("options", {})
  diff = config.differing_options(theirs)
  if stored.get("data_fingerprint") not in (None, fingerprint):
    diff.append("data (the data set's bytes differ)")
  results_path = os.path.join(config.workdir, run_files.RESULTS)
  finished = os.path.exists(results_path)
  if diff:
    shown = ", ".join(
        f"{k}: {theirs.get(k)!r} there, {ours[k]!r} here" if k in ours else k for k in diff[:4]
    )
    raise ConfigError(
        f"--workdir={config.workdir} holds a {'finished' if finished else 'partial'}"
        f" run with a different config ({shown}); choose another --workdir or "
        f"delete that folder"
    )
  return run_files.read_results(config.workdir) if finished else None


def label_stream_key(config, teacher_seed: int | None = None) -> jax.Array:
  """The key of the label-noise stream this run trains on: its own seed's, with its role folded
  in (a --mode=ce run is a teacher, a distilling student a student), so a student never gets
  its teacher's corruption by sharing its seed; with --label_noise_shared, the stream of its
  teacher (`teacher_seed`, role teacher): exactly the labels that teacher trained on."""
  if config.mode == "ce":
    return keys_lib.label_noise_key(config.seed, "teacher")
  if config.label_noise_shared:
    if teacher_seed is None:
      raise ConfigError("--label_noise_shared: the teacher's seed is unknown")
    return keys_lib.label_noise_key(teacher_seed, "teacher")
  return keys_lib.label_noise_key(config.seed, "student")


def epoch_training_labels(config, label_key, labels, epoch: int, num_classes: int, mesh):
  """The labels of `epoch`: corrupted with --label_noise_p where this run's own labels are
  (re-drawn each epoch from fold_in(key, epoch), or once with --label_noise_fixed)."""
  if not config_lib.corrupts_own_labels(config):
    return labels
  key = label_key if config.label_noise_fixed else jax.random.fold_in(label_key, epoch)
  return replicate(
      noise.corrupt_labels(key, labels, p=config.label_noise_p, num_classes=num_classes), mesh
  )


def train(config, data: Dataset, teacher: Teacher | None = None) -> Trained:
  """Trains (or resumes) the run of `config`; a finished run is not redone. Raises
  WorkdirBusyError if another process holds the run folder, and preemption.Preempted after
  checkpointing when a SIGTERM/SIGINT stopped it."""
  if jax.process_index() == 0:
    with runlock.hold(config.workdir):
      return _train(config, data, teacher)
  return _train(config, data, teacher)


def _check_nothing_lost(config, checkpointer: Checkpointer) -> None:
  """With no checkpoint on disk, training starts at step 0; not when metrics.jsonl records an
  epoch at which a checkpoint was written (it was deleted or lost since). The last record may
  be one whose checkpoint a crash or a full disk prevented: it does not count."""
  records = run_files.read_metrics(config.workdir)
  if any(
      r["epoch"] % config.checkpoint_every == 0 or r["epoch"] == config.epochs for r in records[:-1]
  ):
    raise CheckpointError(
        f"{os.path.join(config.workdir, run_files.METRICS)} records {len(records)} trained "
        f"epoch(s) but {checkpointer.directory} holds no checkpoint (deleted or lost); to train "
        f"this run again from step 0, delete that metrics.jsonl"
    )
  if records:
    logging.info(
        "No checkpoint in %s yet: training from step 0 (dropping %d metrics.jsonl "
        "record(s) of epochs trained before it was killed).",
        checkpointer.directory,
        len(records),
    )


def _append_metrics(workdir: str, record: dict[str, Any]) -> None:
  try:
    run_files.append_metrics(workdir, record)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    raise DiskFullError(
        f"no space left on device writing "
        f"{os.path.join(workdir, run_files.METRICS)}; the checkpoints are "
        f"intact: free space and run the same command again to resume (epoch "
        f"{record['epoch']} is trained again)"
    ) from None


def _train(config, data: Dataset, teacher: Teacher | None) -> Trained:
  fingerprint = data.fingerprint()
  finished = check_workdir(config, fingerprint)
  if finished is not None:
    logging.info("%s is finished (results.json present); not redone.", config.workdir)
    return Trained(finished)

  mesh = make_mesh()
  if config.batch_size % mesh.size:
    raise ConfigError(
        f"--batch_size={config.batch_size} is not divisible by the {mesh.size} " f"devices"
    )
  n_train = len(data.train_images)
  steps_per_epoch = n_train // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(
        f"--batch_size={config.batch_size} is larger than the {n_train} " f"training images"
    )
  total_steps = config.epochs * steps_per_epoch
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(config.workdir, exist_ok=True)
    run_files.write_json(
        os.path.join(config.workdir, run_files.CONFIG),
        {
            "options": config.to_dict(),
            "data_fingerprint": fingerprint,
            "data_source": data.source,
            "num_train": n_train,
            "teacher": teacher
            and {"workdir": teacher.workdir, "params_sha256": teacher.results.params_sha256},
            "teacher_selection": teacher and teacher.selection,
            **environment(),
        },
    )

  keys = keys_lib.run_keys(config.seed)
  label_key = label_stream_key(config, teacher.results.seed if teacher else None)
  model = create_model(
      config.model, num_classes=data.num_classes, dropout_rate=config.dropout, dtype=config.dtype
  )
  tx = make_optimizer(config, steps_per_epoch)
  state = replicate(create_train_state(model, keys["init"], tx), mesh)
  checkpointer = Checkpointer(
      os.path.join(config.workdir, "checkpoints"), keep=config.keep_checkpoints, writer=is_main
  )
  progress: dict[str, Any] = {}
  if checkpointer.all_steps():
    state, progress = checkpointer.restore(state)
  else:
    _check_nothing_lost(config, checkpointer)
  start_step = int(state.step)
  start_epoch = start_step // steps_per_epoch
  kept = run_files.truncate_metrics(config.workdir, start_epoch) if is_main else []
  elapsed = progress.get("elapsed_s", kept[-1]["elapsed_s"] if kept else 0.0)
  if start_step >= total_steps:
    logging.info(
        "Resumed %s after its last step (%d): nothing left to train.", config.workdir, start_step
    )
  elif start_step:
    logging.info(
        "Resumed %s from step %d (epoch %d, step %d of it).",
        config.workdir,
        start_step,
        start_epoch + 1,
        start_step % steps_per_epoch,
    )

  images, labels = replicate((data.train_images, data.train_labels), mesh)
  teacher_variables = replicate(teacher.variables, mesh) if teacher is not None else None
  spec = StepSpec.from_config(config, steps_per_epoch)
  train_step = make_train_step(model, spec, mesh, teacher.model if teacher else None)
  apply_fn = predict.eval_apply_fn(model)
  # The logged learning rate, as the train step computes it (one compiled program per kind).
  schedule = tx.learning_rate
  last_test_logits = None

  def evaluate(variables) -> dict[str, float]:
    nonlocal last_test_logits
    last_test_logits = predict.compute_logits(
        apply_fn, variables, data.test_images, config.eval_batch_size
    )
    out = {"test_accuracy": predict.accuracy(last_test_logits, data.test_labels)}
    if data.val_images is not None:
      out["val_accuracy"] = predict.accuracy(
          predict.compute_logits(apply_fn, variables, data.val_images, config.eval_batch_size),
          data.val_labels,
      )
    return out

  logging.info(
      "Training %s (%s, %s) for %d epochs x %d steps at batch %d on %d %s device(s).",
      config.name,
      config.mode,
      config.model,
      config.epochs,
      steps_per_epoch,
      config.batch_size,
      mesh.size,
      jax.devices()[0].platform,
  )
  board = tensorboard.Board(
      config.workdir, enabled=config.tensorboard and is_main, purge_step=start_step
  )
  run_start = time.time() - elapsed
  final = None

  def stop_here(signal_name: str, step: int, epoch: int) -> preemption.Preempted:
    return preemption.Preempted(
        f"stopped by {signal_name or 'a signal to another process'} at step "
        f"{step}/{total_steps} (epoch {epoch + 1}/{config.epochs}); checkpoint saved in "
        f"{checkpointer.step_directory(step)}: run the same command again to resume",
        step,
    )

  with preemption.stop_on_signals() as stop:
    for epoch in range(start_epoch, config.epochs):
      first = start_step - epoch * steps_per_epoch if epoch == start_epoch else 0
      # A run stopped mid-epoch goes on with the epoch's sums and time saved with its checkpoint.
      carried = progress if first else {}
      epoch_start = time.time() - carried.get("epoch_time_s", 0.0)
      order = keys_lib.epoch_permutation(keys["data"], epoch, n_train)
      epoch_labels = epoch_training_labels(config, label_key, labels, epoch, data.num_classes, mesh)
      pending, window_start, window_steps = [], time.time(), 0
      sums = {"loss": carried.get("loss_sum", 0.0), "correct": carried.get("correct", 0)}
      for i in range(first, steps_per_epoch):
        state, metrics = train_step(
            state, teacher_variables, images, epoch_labels, order, keys["train"]
        )
        pending.append(metrics)
        window_steps += 1
        at_window = (i + 1) % config.log_every == 0 or i + 1 == steps_per_epoch
        stopping = preemption.any_process_stopping(stop, poll=at_window)
        if at_window or stopping:
          fetched = jax.device_get(pending)
          pending = []
          window_loss = float(np.mean([m["loss"] for m in fetched]))
          for m in fetched:  # One at a time: the sums do not depend on the windows.
            sums["loss"] += float(m["loss"])
            sums["correct"] += int(m["correct"])
          step = epoch * steps_per_epoch + i + 1
          if not math.isfinite(window_loss):
            last = checkpointer.latest_step()
            raise NonFiniteLossError(
                f"non-finite loss ({window_loss}) at epoch {epoch + 1}, step {step}; stopped. "
                f"Last good checkpoint: "
                + (f"step {last} in {checkpointer.directory}" if last is not None else "none")
                + "; try a lower --lr"
            )
          now = time.time()
          rate = window_steps * config.batch_size / max(now - window_start, 1e-9)
          eta = (total_steps - step) * config.batch_size / rate
          logging.info(
              "epoch %d/%d step %d/%d loss %.4f lr %.4g %.0f img/s ETA %s",
              epoch + 1,
              config.epochs,
              step,
              total_steps,
              window_loss,
              float(schedule(step - 1)),
              rate,
              _duration(eta),
          )
          board.scalars(
              step,
              {
                  "train/loss": window_loss,
                  "train/lr": float(schedule(step - 1)),
                  "train/accuracy": 100.0
                  * sum(int(m["correct"]) for m in fetched)
                  / (len(fetched) * config.batch_size),
                  "train/img_per_s": rate,
              },
          )
          window_start, window_steps = now, 0
        if stopping and i + 1 < steps_per_epoch:
          step = epoch * steps_per_epoch + i + 1
          checkpointer.save(
              state,
              {
                  "loss_sum": sums["loss"],
                  "correct": sums["correct"],
                  "epoch_time_s": time.time() - epoch_start,
                  "elapsed_s": time.time() - run_start,
              },
          )
          raise stop_here(stop.signal_name, step, epoch)
      epoch_time = time.time() - epoch_start
      record = {
          "epoch": epoch + 1,
          "step": int((epoch + 1) * steps_per_epoch),
          "lr": float(schedule((epoch + 1) * steps_per_epoch - 1)),
          "train_loss": sums["loss"] / steps_per_epoch,
          "train_accuracy": 100.0 * sums["correct"] / (steps_per_epoch * config.batch_size),
          "img_per_s": steps_per_epoch * config.batch_size / epoch_time,
      }
      last_epoch = epoch + 1 == config.epochs
      if (epoch + 1) % config.eval_every == 0 or last_epoch:
        record.update(evaluate({"params": state.params, "batch_stats": state.batch_stats}))
        if last_epoch:
          final = {k: record[k] for k in ("test_accuracy", "val_accuracy") if k in record}
      record["elapsed_s"] = time.time() - run_start
      stopping = preemption.any_process_stopping(stop)
      # The record first: one without its checkpoint (a crash or a full disk in between) is
      # dropped when the run resumes from the checkpoint before, and written again.
      if is_main:
        _append_metrics(config.workdir, record)
      if (epoch + 1) % config.checkpoint_every == 0 or last_epoch or stopping:
        checkpointer.save(state, {"elapsed_s": record["elapsed_s"]})
      board.scalars(
          record["step"],
          {
              "test/accuracy": record.get("test_accuracy"),
              "val/accuracy": record.get("val_accuracy"),
          },
      )
      logging.info(
          "epoch %d/%d done: train loss %.4f, train acc %.2f%%%s, %.0f img/s, ETA %s",
          epoch + 1,
          config.epochs,
          record["train_loss"],
          record["train_accuracy"],
          f", test acc {record['test_accuracy']:.2f}%" if "test_accuracy" in record else "",
          record["img_per_s"],
          _duration(epoch_time * (config.epochs - epoch - 1)),
      )
      if stopping:
        raise stop_here(stop.signal_name, record["step"], epoch)

  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if final is None:  # Resumed after the last epoch: nothing trained, evaluate once.
    final = evaluate(variables)
  level_name, level = config_lib.noise_level(config)
  results = run_files.RunResults(
      experiment=config.name,
      seed=config.seed,
      mode=config.mode,
      level_name=level_name,
      level=level,
      model=config.model,
      dataset=config.dataset,
      epochs=config.epochs,
      steps=int(state.step),
      test_accuracy=final["test_accuracy"],
      val_accuracy=final.get("val_accuracy"),
      params_sha256=run_files.params_sha256(variables),
      wall_time_s=round(time.time() - run_start, 3),
      device=environment()["device"],
      teacher=teacher
      and run_files.TeacherRef(
          teacher.workdir, teacher.results.test_accuracy, teacher.results.params_sha256
      ),
      teacher_selection=teacher and teacher.selection,
  )
  board.close()
  checkpointer.close()
  logging.info(
      "Trained %s: test accuracy %.2f%%, params_sha256 %s",
      config.workdir,
      results.test_accuracy,
      results.params_sha256[:16],
  )
  return Trained(results, model, jax.device_get(variables), last_test_logits)


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
