"""The grid: --grid specs parsed into values of each option's type, a value's stable text, and a
grid point's run-folder name (%-escaped, shortened with a hash past 200 bytes).

A value is turned back into nkd.main flags by the config (`Config.to_flags`), as every other
writer of nkd.main flags does.
"""

from __future__ import annotations

import difflib
import hashlib
import urllib.parse
from typing import Any, Sequence

from nkd import config as config_lib
from nkd.config import fields as fields_lib
from nkd.errors import ConfigError
from nkd.sweep import SweepError

# Options the sweep sets itself for every run.
RESERVED = ("workdir", "workspace", "name")
_SAFE_CHARS = "._-+:@"
_MAX_NAME = 200  # bytes of a run folder's name before it is shortened with a hash

_FIELDS = config_lib.Config.fields_by_name()
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_value(key: str, text: str) -> Any:
  """A grid value as option `key`'s type (':' separates a list's elements). Text that does not
  parse is kept as typed: the run then fails with nkd.main's own message."""
  field = _FIELDS[key]
  default = field.default
  try:
    if isinstance(default, bool):
      return _BOOL_WORDS.get(text.strip().lower(), text)
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, tuple):
      parts = text.split(":")
      try:
        return fields_lib.from_value(field, parts)
      except ConfigError:
        return tuple(parts)
  except ValueError:
    return text
  return text


def value_text(value: Any) -> str:
  """The stable text of a grid value (run folder names, --list, sweep.json): true/false, a
  float as Python's shortest repr, ':' between a list's elements."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, tuple):
    return ":".join(map(str, value))
  return str(value)


def point_flags(point: dict[str, Any]) -> list[str]:
  """The nkd.main flags that set the options of `point` ({option: value}), in its order."""
  return config_lib.Config(**point).to_flags(list(point))


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
  """['seed=0,10', 'lr=0.1'] -> [('seed', [0, 10]), ('lr', [0.1])]: values typed (`parse_value`)."""
  if not specs:
    raise SweepError(
        "no --grid given: name at least one option and its values, e.g. " "--grid=seed=0,10,20"
    )
  options = config_lib.option_names()
  grid, seen = [], set()
  for spec in specs:
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key:
      raise SweepError(
          f"malformed --grid={spec!r}: expected KEY=V1,V2,... (e.g. " f"--grid=seed=0,10,20)"
      )
    if key not in options:
      close = difflib.get_close_matches(key, options, n=1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      raise SweepError(f"--grid={spec}: {key!r} is not an option of nkd.main{hint}")
    if key in RESERVED:
      raise SweepError(
          f"--grid={spec}: --{key} is set by the sweep for every run"
          + (" (use nkd.sweep's --workspace)" if key == "workspace" else "")
      )
    if key in seen:
      raise SweepError(f"--grid={spec}: {key} appears in more than one --grid")
    seen.add(key)
    if not values.strip():
      raise SweepError(f"--grid={spec}: empty value list for {key}")
    raw = values.split(",")
    if any(not v.strip() for v in raw):
      raise SweepError(f"--grid={spec}: empty value in the list for {key}")
    typed = [parse_value(key, v.strip()) for v in raw]
    texts = [value_text(v) for v in typed]
    duplicates = sorted({t for t in texts if texts.count(t) > 1})
    if duplicates:
      raise SweepError(f"--grid={spec}: {key} lists the value {duplicates[0]} more than once")
    grid.append((key, typed))
  return grid


def point_name(point: Sequence[tuple[str, str]]) -> str:
  """The run folder of a grid point: 'seed=0,input_noise_sigma=0.05' (escaped, bounded)."""
  name = ",".join(f"{k}={urllib.parse.quote(v, safe=_SAFE_CHARS)}" for k, v in point)
  if len(name.encode()) > _MAX_NAME:
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    name = name.encode()[: _MAX_NAME - 13].decode(errors="ignore") + "-" + digest
  return name
