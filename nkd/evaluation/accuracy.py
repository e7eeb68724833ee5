"""Clean test accuracy: the results.json section "clean"."""

from __future__ import annotations

from absl import logging

from nkd.evaluation.evaluator import EvalData, Model


def run(model: Model, data: EvalData, options) -> dict:
  """{"accuracy" (percent), "num_examples"} on the whole test set."""
  accuracy = data.clean_accuracy(model, options.eval_batch_size)
  logging.info("Clean test accuracy %.2f%% (%d images)", accuracy, len(data.labels))
  return {"accuracy": accuracy, "num_examples": int(len(data.labels))}
