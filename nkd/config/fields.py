"""Option fields and their text form: one definition of how an option becomes a flag and back.

An option is a dataclass field with metadata: `help`, optionally `choices`, `element` (the type
of a list's elements), `multi` (a repeatable flag), `group` (its section of `--help`),
`teacher_side` (only a distillation run may set it), `level` (it can be an experiment's noise
level; the number orders them), `omit_default` (left out of the recipe while at its default: an
option added after runs were made, so their recipe hashes and stored configs stay valid) and
`nonempty` (a list flag that, when given, needs at least one value).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from absl import flags

from nkd.errors import ConfigError


def opt(default, help_text: str, **extra):
  """A dataclass field carrying an option's default, help text and metadata."""
  return dataclasses.field(default=default, metadata={"help": help_text, **extra})


def jsonable(value):
  return list(value) if isinstance(value, tuple) else value


def as_flag(name: str, value: Any) -> str:
  """The command-line form of one option value: `--name=value`, `--name` / `--noname`."""
  if isinstance(value, bool):
    return f"--{name}" if value else f"--no{name}"
  if isinstance(value, (tuple, list)):
    return f"--{name}={','.join(map(str, value))}"
  return f"--{name}={value}"


def as_flags(values: dict[str, Any], fields_by_name: dict[str, dataclasses.Field]) -> list[str]:
  """Flags for `values`; a repeatable option gives one flag per element."""
  out = []
  for name, value in values.items():
    if fields_by_name[name].metadata.get("multi"):
      out += [f"--{name}={v}" for v in value]
    else:
      out.append(as_flag(name, value))
  return out


def element_type(f: dataclasses.Field):
  """int, float or str: the element type of a list option."""
  if "element" in f.metadata:
    return f.metadata["element"]
  annotation = str(f.type)
  return float if "float" in annotation else int if "int" in annotation else str


def from_value(f: dataclasses.Field, value: Any) -> Any:
  """A stored (JSON) or parsed flag value, converted to the field's type."""
  if f.metadata.get("multi"):
    return tuple(value or ())
  if isinstance(f.default, tuple):
    element = element_type(f)
    try:
      return tuple(element(v) for v in (value or ()))
    except ValueError:
      raise ConfigError(
          f"--{f.name} expects a comma-separated list of {element.__name__}, "
          f"got {','.join(map(str, value))!r}"
      ) from None
  return value


def define(
    fields: Iterable[dataclasses.Field],
    flag_values: flags.FlagValues,
    module_name: str | None = None,
) -> None:
  """Defines one absl flag per field, attributed to `module_name` (for `--help`)."""
  for f in fields:
    meta, default = f.metadata, f.default
    help_text = meta.get("help", "")
    kwargs = {"flag_values": flag_values}
    if module_name:
      kwargs["module_name"] = module_name
    if meta.get("multi"):
      flags.DEFINE_multi_string(f.name, list(default), help_text, **kwargs)
    elif "choices" in meta:
      flags.DEFINE_enum(f.name, default, list(meta["choices"]), help_text, **kwargs)
    elif isinstance(default, bool):
      flags.DEFINE_bool(f.name, default, help_text, **kwargs)
    elif isinstance(default, int):
      flags.DEFINE_integer(f.name, default, help_text, **kwargs)
    elif isinstance(default, float):
      flags.DEFINE_float(f.name, default, help_text, **kwargs)
    elif isinstance(default, tuple):
      flags.DEFINE_list(f.name, [str(v) for v in default], help_text, **kwargs)
    else:
      flags.DEFINE_string(f.name, default, help_text, **kwargs)


def values_from_flags(
    fields: Sequence[dataclasses.Field], flag_values: flags.FlagValues, only_present: bool = False
) -> dict[str, Any]:
  """{name: typed value} of the parsed flags of `fields` (only those given, if asked)."""
  return {
      f.name: from_value(f, flag_values[f.name].value)
      for f in fields
      if not only_present or flag_values[f.name].present
  }
