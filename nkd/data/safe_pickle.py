"""A restricted unpickler for the official CIFAR-10 Python-format batches.

`pickle.loads` runs whatever a file asks for, so a batch given with --data_dir could run any
code. `loads` here resolves only the globals that pickled numpy arrays need, each through a
wrapper that checks its arguments; everything else is refused with a `DataError` naming the
file and the global. Plain bytes, str, int, float, bool, None, list, tuple, dict and set need no
global. The globals allowed (numpy 1 and numpy 2 names of the same functions):

  numpy.core.multiarray._reconstruct, numpy._core.multiarray._reconstruct
      an empty array, given only (numpy.ndarray, (0,), b"b"), as numpy's __reduce__ writes;
  numpy.ndarray
      a marker accepted only as `_reconstruct`'s first argument, not callable;
  numpy.dtype
      a plain numeric dtype (bool, int, uint, float, complex): object, structured, sub-array and
      string dtypes are refused;
  numpy.core.multiarray.scalar, numpy._core.multiarray.scalar
      a numpy scalar of such a dtype from its bytes;
  numpy.core.numeric._frombuffer, numpy._core.numeric._frombuffer
      an array of such a dtype from bytes (numpy's pickles at protocol 5);
  _codecs.encode
      only (str, "latin1"): how Python 3 writes bytes at protocols 0 to 2.

The state a pickle gives to an object (its BUILD opcode) is applied only to the arrays and dtypes
made here, each once, and only after it is checked: a dtype's state is numpy's plain
(3, byteorder, None, None, None, -1, -1, flags) with the flags of a fresh dtype, so a file cannot
flag a uint8 dtype as holding objects, and an array's state must carry such a dtype. numpy's
own code then checks that the data fit the shape. This is the
pure-Python unpickler (pickle._Unpickler), the C one has no hook for BUILD.
"""

from __future__ import annotations

import io
import pickle
import reprlib

import numpy as np

from nkd.errors import DataError

HOLDS = "a CIFAR-10 batch holds only numpy arrays, bytes, str, int, list and dict"
_NUMERIC_KINDS = "biufc"
_BYTEORDERS = ("<", ">", "|", "=")
# numpy's own functions, taken from its __reduce__ rather than from private modules.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_SCALAR = np.int64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


class _NdarrayMarker:
  """Stands for numpy.ndarray in a pickle: accepted by `_reconstruct`, nothing else."""

  __slots__ = ()


_NDARRAY = _NdarrayMarker()

_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): "_dtype",
    ("numpy.core.multiarray", "scalar"): "_scalar",
    ("numpy._core.multiarray", "scalar"): "_scalar",
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
    ("_codecs", "encode"): "_latin1",
}


def _text(value) -> str | None:
  """A str, or bytes as Python 2 strings arrive with encoding="bytes"; otherwise None."""
  if isinstance(value, bytes):
    try:
      return value.decode("ascii")
    except UnicodeDecodeError:
      return None
  return value if isinstance(value, str) else None


def _short(*values) -> str:
  """Arguments for a message, each cut short (a batch's data is 30 MB)."""
  return ", ".join(reprlib.repr(v) for v in values)


def _is_shape(value) -> bool:
  return isinstance(value, tuple) and all(
      type(n) is int and n >= 0 for n in value
  )  # pylint: disable=unidiomatic-typecheck


class _Unpickler(pickle._Unpickler):  # pylint: disable=protected-access
  """Resolves only `_GLOBALS`; BUILD only on the arrays and dtypes made here."""

  def __init__(self, blob: bytes, name: str, encoding: str):
    super().__init__(io.BytesIO(blob), encoding=encoding)
    self._name = name
    self._unbuilt = {}  # id -> array or dtype made here whose one BUILD is still allowed.

  def refused(self, what: str, why: str = HOLDS) -> DataError:
    return DataError(f"{self._name}: refused to unpickle {what} ({why})")

  def find_class(self, module, name):
    target = _GLOBALS.get((module, name))
    if target is None:
      raise self.refused(f"global '{module}.{name}'")
    return getattr(self, target) if isinstance(target, str) else target

  def _numeric(self, dtype) -> np.dtype:
    """`dtype` if it is a plain numeric numpy dtype made and built here; refused otherwise."""
    if not isinstance(dtype, np.dtype):
      raise self.refused(f"an array or scalar whose dtype is {type(dtype).__name__}")
    fresh = np.dtype(dtype.str)
    if (
        dtype.kind not in _NUMERIC_KINDS
        or dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.flags != fresh.flags
        or dtype != fresh
    ):
      raise self.refused(f"numpy dtype {dtype.str!r}")
    return dtype

  def _dtype(self, spec, align=False, copy=False):
    del copy  # Always a new object: its BUILD must not change numpy's shared dtypes.
    text = _text(spec)
    if text is None or not isinstance(align, int) or align not in (0, 1):  # Python 2: 0 and 1.
      raise self.refused(f"numpy.dtype({_short(spec, align)})")
    try:
      probe = np.dtype(text)
    except (TypeError, ValueError):
      raise self.refused(f"numpy dtype {_short(text)}") from None
    if (
        probe.kind not in _NUMERIC_KINDS
        or probe.hasobject
        or probe.fields is not None
        or probe.subdtype is not None
    ):
      raise self.refused(
          f"numpy dtype {_short(text)}",
          "a CIFAR-10 batch holds only numeric numpy "
          "arrays: an object array would carry pickled objects",
      )
    dtype = np.dtype(text, bool(align), True)
    self._unbuilt[id(dtype)] = dtype
    return dtype

  def _reconstruct(self, subtype, shape, typecode):
    if subtype is not _NDARRAY or shape != (0,) or _text(typecode) != "b":
      raise self.refused(f"numpy _reconstruct({_short(subtype, shape, typecode)})")
    array = _RECONSTRUCT(np.ndarray, (0,), b"b")
    self._unbuilt[id(array)] = array
    return array

  def _scalar(self, dtype, data=None):
    dtype = self._numeric(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
      raise self.refused(f"numpy scalar of {dtype.str!r} from {type(data).__name__}")
    return _SCALAR(dtype, data)

  def _frombuffer(self, buffer, dtype, shape, order):
    dtype = self._numeric(dtype)
    order = _text(order)
    if (
        not isinstance(buffer, (bytes, bytearray))
        or not _is_shape(shape)
        or order not in ("C", "F")
    ):
      raise self.refused(f"numpy _frombuffer({_short(buffer, dtype, shape, order)})")
    return _FROMBUFFER(buffer, dtype, shape, order)

  def _latin1(self, text, encoding=None):
    if not isinstance(text, str) or _text(encoding) not in ("latin1", "latin-1"):
      raise self.refused(f"_codecs.encode({_short(text, encoding)})")
    return text.encode("latin-1")

  def load_build(self):
    state = self.stack.pop()
    inst = self.stack[-1]
    if self._unbuilt.pop(id(inst), None) is not inst:
      raise self.refused(
          f"a state for {type(inst).__name__}",
          "only the numpy arrays and " "dtypes a CIFAR-10 batch makes get a state, once",
      )
    if isinstance(inst, np.dtype):
      fresh = np.dtype(inst.str)
      # (version, byteorder, subarray, names, fields, elsize, alignment, flags); numpy ignores
      # elsize and alignment for numeric dtypes.
      if (
          not isinstance(state, tuple)
          or len(state) != 8
          or state[0] != 3
          or _text(state[1]) not in _BYTEORDERS
          or state[2:5] != (None, None, None)
          or not all(isinstance(n, int) for n in state[5:7])
          or state[7] != fresh.flags
      ):
        raise self.refused(f"numpy dtype state {_short(state)}")
      inst.__setstate__((3, _text(state[1]), *state[2:]))
      self._numeric(inst)
      return
    # (version, shape, dtype, is_fortran, data).
    if (
        not isinstance(state, tuple)
        or len(state) != 5
        or state[0] != 1
        or not _is_shape(state[1])
        or not isinstance(state[3], int)
        or state[3] not in (0, 1)
        or not isinstance(state[4], (bytes, bytearray, str))
    ):
      raise self.refused(f"numpy array state {_short(state)}")
    self._numeric(state[2])
    inst.__setstate__(state)

  dispatch = dict(pickle._Unpickler.dispatch)  # pylint: disable=protected-access
  dispatch[pickle.BUILD[0]] = load_build


def loads(blob: bytes, name: str, *, encoding: str = "bytes"):
  """`pickle.loads(blob, encoding=encoding)` allowing only numpy arrays of plain numeric dtypes
  and pickle's own types. A `DataError` naming `name` refuses anything else; malformed input
  raises pickle's usual errors."""
  return _Unpickler(blob, name, encoding).load()
