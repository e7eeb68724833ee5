"""nkd.main: trains one run (a teacher, a student alone or a distilled student), evaluates it,
prints a table of it (and of its teacher).

  python -m nkd.main --flagfile=experiments/X.flags [--flag=value ...]   (or: nkd-train ...)

--flagfile=PATH reads an experiment's options from PATH; later flags override it. The run folder
(--workdir) gets config.json, metrics.jsonl, TensorBoard event files, checkpoints/ and, once
finished, results.json.
"""

import contextlib
import errno
import sys

from absl import app, flags, logging

from nkd import cli
from nkd import config as config_lib
from nkd import run_files
from nkd.errors import NkdError
from nkd.training import preemption, runlock

config_lib.define_flags()


class _QuietLibraries(logging.logging.Filter):
  """Keeps orbax's per-save INFO chatter out of the progress log (warnings still pass, as one
  line). A failed save (a full disk) is reported by nkd itself: without the tracebacks of
  orbax's writer threads and of the asyncio futures they leave behind."""

  def filter(self, record):
    if record.name == "asyncio" and "exception was never retrieved" in record.getMessage():
      return False  # nkd uses no asyncio; orbax's failed writes do.
    if "orbax" not in record.pathname:
      return True
    if "raised an exception" in record.getMessage():
      return False  # A writer thread's failure: it surfaces (and is reported) in the save.
    record.exc_info, record.exc_text = None, None
    return record.levelno >= logging.logging.WARNING


def print_results(config, results: run_files.RunResults) -> None:
  """The results table (the teacher's row first for a distilled student) and, where it was
  chosen among seeds, how the teacher was chosen."""
  rows = [("student" if results.teacher else config.name, results, config.workdir)]
  if results.teacher:
    rows.insert(
        0, ("teacher", run_files.read_results(results.teacher.workdir), results.teacher.workdir)
    )
  print(cli.results_table(rows), flush=True)
  if results.teacher_selection:
    from nkd import pipeline  # pylint: disable=g-import-not-at-top

    print(pipeline.selection_summary(results.teacher_selection), flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --flags")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    config = config_lib.from_flags(flags.FLAGS, sys.argv)
    # JAX, Flax and the rest load here, for a run: --help and refused flags answer without them
    # (about a second of CPU less each).
    pipeline = cli.load_pipeline()

    # One process at a time in a run folder (a multi-host run's processes share one: the
    # trainer's process 0 holds it).
    with contextlib.nullcontext() if config.distributed else runlock.hold(config.workdir):
      results = pipeline.run(config)
    print_results(config, results)
  except preemption.Preempted as e:
    print(f"nkd: {e}", file=sys.stderr)
    sys.exit(preemption.EXIT_PREEMPTED)
  except KeyboardInterrupt:
    print(
        "nkd: interrupted; the checkpoints on disk are kept: run the same command again to "
        "resume",
        file=sys.stderr,
    )
    sys.exit(130)
  except NkdError as e:
    print(f"nkd: error: {e}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    print(
        f"nkd: error: no space left on device{f' writing {e.filename}' if e.filename else ''}"
        f"; files written before are intact: free space and run the same command again",
        file=sys.stderr,
    )
    sys.exit(2)


def run() -> None:
  """The console script `nkd-train`, the same as `python -m nkd.main`."""
  app.run(main, flags_parser=cli.parser("nkd", __doc__, cli.config_sections()))


if __name__ == "__main__":
  run()
