"""nkd.evaluate: evaluates a finished run again, with these evaluation options.

  python -m nkd.evaluate --workdir=RUN [--eval_suite=...] [--pgd_...]   (or: nkd-evaluate ...)

Loads the run's options from RUN/config.json, its final checkpoint and (for a distilled student)
its teacher, runs the evaluation suite (nkd/evaluation) and merges the sections into
RUN/results.json (`clean`, `calibration`, `pgd`, `cifar10_c`, `cinic_imagenet`, ...).
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags

from nkd import cli
from nkd import config as config_lib
from nkd.config import fields as fields_lib
from nkd.errors import ConfigError, NkdError
from nkd.training import runlock

_EVAL_FIELDS = dataclasses.fields(config_lib.EvalOptions)
flags.DEFINE_string("workdir", None, "Folder of a finished run to evaluate.")
config_lib.define_flags(names=[f.name for f in _EVAL_FIELDS])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    if not flags.FLAGS.workdir:
      raise ConfigError("--workdir: expected the folder of a finished run")
    overrides = fields_lib.values_from_flags(_EVAL_FIELDS, flags.FLAGS, only_present=True)
    pipeline = cli.load_pipeline()  # JAX: only to evaluate

    with runlock.hold(flags.FLAGS.workdir, create=False):  # Not while a run works there.
      results = pipeline.evaluate_run(flags.FLAGS.workdir, overrides)
    print("\n".join(cli.summary_lines(results)), flush=True)
  except NkdError as e:
    print(f"nkd: error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """The console script `nkd-evaluate`, the same as `python -m nkd.evaluate`."""
  sections = [("run", ["workdir"]), *cli.config_sections([f.name for f in _EVAL_FIELDS])]
  app.run(main, flags_parser=cli.parser("nkd", __doc__, sections))


if __name__ == "__main__":
  run()
