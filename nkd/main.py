"""nkd.main: trains one run (a teacher, a student alone or a distilled student), evaluates it.

  python -m nkd.main --flagfile=experiments/X.flags [--flag=value ...]   (or: nkd-train ...)

--flagfile=PATH reads an experiment's options from PATH; later flags override it. The run folder
(--workdir) gets config.json, metrics.jsonl, TensorBoard event files, checkpoints/ and, once
finished, results.json.
"""

import sys

from absl import app, flags, logging

from nkd import cli
from nkd import config as config_lib
from nkd import pipeline
from nkd.errors import NkdError

config_lib.define_flags()


class _QuietLibraries(logging.logging.Filter):
  """Keeps orbax's per-save INFO chatter out of the progress log (warnings still pass)."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --flags")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    pipeline.run(config_lib.from_flags(flags.FLAGS, sys.argv))
  except NkdError as e:
    print(f"nkd: error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """The console script `nkd-train`, the same as `python -m nkd.main`."""
  app.run(main, flags_parser=cli.parser("nkd", __doc__, cli.config_sections()))


if __name__ == "__main__":
  run()
