"""Modules imported when first used: scipy's take most of a second to import, and every run
imports the evaluator registry, which names them, while few runs use them."""

from __future__ import annotations

import importlib.util
import sys
import types


def lazy_module(name: str) -> types.ModuleType:
  """The module `name`, executed on its first attribute access (importlib's LazyLoader)."""
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  if spec is None or spec.loader is None:
    raise ImportError(f"No module named {name!r}", name=name)
  spec.loader = importlib.util.LazyLoader(spec.loader)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module
