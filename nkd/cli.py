"""The command line shared by nkd's programs (nkd.main, nkd.evaluate, nkd.sweep, nkd.report,
benchmarks.bench): their `--help`, their flag errors, and what they print of a run.

`--help` lists the program's own options, grouped by area, each with its default and the first
sentence of its help; `--helpfull` gives their full text, then absl's own flags. A bad flag is
one line on stderr, with a "did you mean" where a close option exists, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import importlib
import os
import re
import sys
import textwrap
from typing import Sequence

from absl import flags

from nkd import config as config_lib
from nkd import runtime

# The areas of nkd.main's options, in the order --help shows them (a Config field's `group`).
GROUPS = ("run and data", "model and optimiser", "distillation and noise", "evaluation")
HELP_ARGS = frozenset({"-h", "-?", "--help", "--helpshort"})
FULL_HELP_ARGS = frozenset({"--helpfull"})
_WIDTH = 100
_COLUMN = 32  # where the one-line help starts
# A sentence ends at a period followed by a capital (so 'e.g. x', '0.9/N', 'config.json' do not).
_FIRST_SENTENCE = re.compile(r"^(.+?\.)(?=\s+[A-Z])", re.S)

Sections = Sequence[tuple[str, Sequence[str]]]


# Python's cyclic garbage collector in a process that runs or evaluates. Importing JAX, Flax and
# Orbax leaves about 140,000 objects it tracks, and tracing a run's programs makes many more: at
# Python's default thresholds (700, 10, 10) it ran often enough to take about 12% of a small
# run's CPU time (`perf`, 2-vCPU Zen 4).
GC_THRESHOLDS = (10_000, 10, 10)


def load_pipeline():
  """Imports `nkd.pipeline` (JAX and the rest) for a command that runs or evaluates: glibc's
  allocator keeps the memory of each step's temporaries (`runtime.tune_malloc`, on the CPU),
  the collector runs less often (GC_THRESHOLDS), and what is alive once the imports are done is
  left out of its later walks (`gc.freeze`, once per process)."""
  runtime.tune_malloc()
  gc.set_threshold(*GC_THRESHOLDS)
  pipeline = importlib.import_module("nkd.pipeline")
  if not gc.get_freeze_count():
    gc.freeze()
  return pipeline


def config_sections(names: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
  """Config options (all, or `names`) grouped by area, in GROUPS order, then definition order."""
  fields = [
      f for f in dataclasses.fields(config_lib.Config) if names is None or f.name in set(names)
  ]
  groups = {g: [] for g in GROUPS}
  for f in fields:
    groups.setdefault(f.metadata.get("group", "other"), []).append(f.name)
  return [(title, members) for title, members in groups.items() if members]


def first_sentence(text: str) -> str:
  text = " ".join(text.split())
  match = _FIRST_SENTENCE.match(text)
  return match.group(1) if match else text


def _shown_value(value) -> str:
  """A default as typed on the command line; a float such as 1/255 to 6 significant digits."""
  text = str(value)
  if len(text) > 10 and "." in text:
    try:
      return f"{float(text):.6g}"
    except ValueError:
      pass
  return text


def _shown_default(flag: flags.Flag) -> str:
  value = flag.default
  if value is None:
    return ""
  if isinstance(value, bool):
    return "=true" if value else "=false"
  if isinstance(value, (list, tuple)):
    return "=" + ",".join(map(_shown_value, value)) if value else '=""'
  return f"={_shown_value(value)}" if value != "" else '=""'


def _own_help(flag: flags.Flag) -> str:
  """The flag's help text without what absl adds to it (an enum's '<a|b>: ', a multi flag's
  '; repeat this option ...')."""
  text = " ".join(flag.help.split())
  choices = getattr(flag.parser, "enum_values", None)
  if choices and text.startswith(f"<{'|'.join(choices)}>: "):
    text = text[len("|".join(choices)) + 4 :]
  return text.split("; repeat this option to specify a list of values")[0]


def _option_lines(flag: flags.Flag, full: bool) -> list[str]:
  head = f"  --{flag.name}{_shown_default(flag)}"
  text = _own_help(flag)
  text = text if full else first_sentence(text)
  if isinstance(flag, flags.MultiFlag) and "repeatable" not in text:
    text += " (repeatable)"
  choices = getattr(flag.parser, "enum_values", None)
  if choices:
    text += f" [{'|'.join(choices)}]"
  indent = " " * _COLUMN
  wrap = dict(
      width=_WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
  )
  if len(head) < _COLUMN - 1:
    return textwrap.wrap(text, initial_indent=head.ljust(_COLUMN), **wrap) or [head]
  return [head, *textwrap.wrap(text, initial_indent=indent, **wrap)]


def _is_ours(module: str) -> bool:
  """Whether flags defined in `module` are the program's own (not absl's or a library's)."""
  return module.startswith(("nkd", "benchmarks")) or module in (sys.argv[0], "__main__")


def help_text(
    doc: str, flag_values: flags.FlagValues, sections: Sections, full: bool = False
) -> str:
  """The program's doc, then its options by area (any of its own left out of `sections`
  under "other options"); with `full`, their whole help text and the flags of absl and the
  libraries after them."""
  listed = {name for _, names in sections for name in names}
  by_module = sorted(flag_values.flags_by_module_dict().items())
  unlisted = sorted(
      {f.name for module, module_flags in by_module if _is_ours(module) for f in module_flags}
      - listed
  )
  sections = [*sections, ("other options", unlisted)] if unlisted else sections
  lines = [doc.strip(), ""]
  for title, names in sections:
    lines.append(f"{title}:")
    for name in names:
      lines += _option_lines(flag_values[name], full)
    lines.append("")
  others = [
      module
      for module, module_flags in by_module
      if not _is_ours(module) and any(f.name not in listed for f in module_flags)
  ]
  if not full:
    lines.append(
        "--helpfull: the options' full text"
        + (", and the flags of absl and the libraries." if others else ".")
    )
    return "\n".join(lines)
  for module in others:
    lines += [flag_values.module_help(module).strip("\n"), ""]
  return "\n".join(lines).rstrip()


def help_request(argv: Sequence[str]) -> str | None:
  """'short' or 'full' where the command line (before a '--') asks for help, else None."""
  own = list(argv)
  if "--" in own:
    own = own[: own.index("--")]
  if FULL_HELP_ARGS & set(own):
    return "full"
  if HELP_ARGS & set(own):
    return "short"
  return None


def answer_help(
    argv: Sequence[str], doc: str, flag_values: flags.FlagValues, sections: Sections
) -> bool:
  """Prints the help `argv` asks for (help_text's, short or full) and returns True; False where
  it asks for none."""
  request = help_request(argv)
  if request:
    print_help(help_text(doc, flag_values, sections, full=request == "full"))
  return request is not None


def flag_error(error: flags.Error, flag_values: flags.FlagValues) -> str:
  """One line for a flag that absl refused; an unknown one gets the closest option's name."""
  if isinstance(error, flags.UnrecognizedFlagError):
    return f"unknown option --{error.flagname}{did_you_mean(error.flagname, flag_values)}"
  return " ".join(str(error).split())


def did_you_mean(name: str, flag_values: flags.FlagValues) -> str:
  """' (did you mean --NAME?)' for the closest flag of `flag_values`, or '' where none is."""
  names = list(flag_values)
  negated = [f"no{n}" for n in names if flag_values[n].boolean]
  close = difflib.get_close_matches(name, names + negated, n=1, cutoff=0.75)
  if not close:
    close = difflib.get_close_matches(name, names + negated, n=1)
  return f" (did you mean --{close[0]}?)" if close else ""


def usage_error(prog: str, error: Exception, flag_values: flags.FlagValues) -> int:
  """Prints the one line `PROG: error: ...` for `error` (a flag absl refused as `flag_error`
  names it, any other error as its message); the exit status for it, 2."""
  message = flag_error(error, flag_values) if isinstance(error, flags.Error) else error
  print(f"{prog}: error: {message}", file=sys.stderr)
  return 2


def print_help(text: str) -> None:
  """Prints to stdout; a reader that stops early (`--help | head`) is no error."""
  try:
    print(text, flush=True)
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def parser(label: str, doc: str, sections: Sections, flag_values: flags.FlagValues = flags.FLAGS):
  """A `flags_parser` for absl's `app.run`: help as above (exit 0), a bad flag as one line
  `LABEL: error: ...` (exit 2); otherwise the arguments that are not flags."""

  def parse(argv: Sequence[str]) -> list[str]:
    if answer_help(argv[1:], doc, flag_values, sections):
      sys.exit(0)
    try:
      return flag_values(list(argv))
    except flags.Error as e:
      sys.exit(usage_error(label, e, flag_values))

  return parse


def summary_lines(results) -> list[str]:
  """A few human-readable lines of a run's evaluation sections (a RunResults)."""
  lines = []
  if results.clean:
    lines.append(f"clean accuracy      {results.clean['accuracy']:.2f}%")
  if results.calibration:
    cal = results.calibration
    lines.append(
        f"ECE / NLL           {cal['ece']:.2f}% / {cal['nll']:.4f}"
        + (
            f"   teacher agreement {cal['teacher_agreement']:.2f}%"
            if cal.get("teacher_agreement") is not None
            else ""
        )
    )
  for r in (results.pgd or {}).get("results", []):
    lines.append(
        f"PGD-{r['steps']:<3} eps {r['eps']:.4f}  robust {r['robust_accuracy']:.2f}% "
        f"(worst restart {r['worst_restart_accuracy']:.2f}%, {r['restarts']} restarts)"
    )
  if results.cifar10_c:
    c = results.cifar10_c
    mean = c.get("mean_15")
    lines.append(
        f"CIFAR-10-C ({c['source']})  mean-15 "
        f"{'n/a' if mean is None else f'{mean:.2f}%'}; per corruption: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(c["mean_per_corruption"].items()))
    )
  for entry in (results.autoattack or {}).get("results", []):
    masking = " (gradient masking suspected)" if entry["masking_check"]["suspicious"] else ""
    lines.append(
        f"AutoAttack {entry['version']:<8} eps {entry['eps']:.4f}  robust "
        f"{entry['robust_accuracy']:.2f}% (clean {entry['clean_accuracy']:.2f}%){masking}"
    )
  if results.smoothing:
    c = results.smoothing
    lines.append(
        f"smoothing sigma {c['sigma']:g}  certified accuracy "
        + ", ".join(f"r={r} {a:.1f}%" for r, a in c["certified_accuracy"].items())
        + f"; abstain {c['abstain_rate']:.1f}%"
    )
  if results.cinic_imagenet:
    c = results.cinic_imagenet
    lines.append(
        f"CINIC-10 ImageNet   {c['accuracy']:.2f}%"
        if c["status"] == "ok"
        else f"CINIC-10 ImageNet   skipped: {c['reason']}"
    )
  return lines


def results_table(rows) -> str:
  """The table nkd.main prints: one line per (role, RunResults, workdir) of `rows`, then the
  evaluation of the last."""
  header = f"{'role':<10} {'model':<10} {'epochs':>6} {'test acc':>9} {'time':>8}  params_sha256"
  lines = [header, "-" * len(header)]
  for role, res, workdir in rows:
    lines.append(
        f"{role:<10} {res.model:<10} {res.epochs:>6} {res.test_accuracy:>8.2f}% "
        f"{res.wall_time_s or 0:>7.0f}s  {res.params_sha256[:16]}  {workdir}"
    )
  role, res, _ = rows[-1]
  evaluation = summary_lines(res.with_sections({"clean": None}))
  if evaluation:
    lines += ["", f"evaluation of the {role}:", *("  " + line for line in evaluation)]
  return "\n".join(lines)
