"""The CIFAR-10 batches are read with a restricted unpickler (nkd.data.safe_pickle): the official
format loads as pickle.loads gives it, and a batch that would run code is refused with one line
naming the file and the global, running nothing and writing no cache."""

import builtins
import hashlib
import os
import pickle
import subprocess
import tarfile

import numpy as np
import pytest

from nkd.data import cifar10, safe_pickle
from nkd.errors import DataError

from helpers import assert_one_line_error, run_cli

_RECONSTRUCT = np.zeros(0).__reduce__()[0]


def _touch(path):
  open(path, "w").close()  # pylint: disable=consider-using-with,unspecified-encoding


class _Reduce:
  """Pickles as a call of `func(*args)`, run by whoever unpickles it."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


class _SetState:
  """A user class whose __setstate__ (run by BUILD when unpickled) creates `path`."""

  def __init__(self, path):
    self.path = path

  def __setstate__(self, state):
    _touch(state["path"])


class _Dtype:
  """Pickles as numpy's uint8 dtype, with `state` as what BUILD gives it."""

  def __init__(self, state):
    self.state = state

  def __reduce__(self):
    return np.dtype, ("u1", False, True), self.state


class _Array:
  """Pickles as numpy's array reconstruction with the given array state."""

  def __init__(self, state):
    self.state = state

  def __reduce__(self):
    return _RECONSTRUCT, (np.ndarray, (0,), b"b"), self.state


def _payloads(marker):
  """(name, object whose unpickling creates `marker` or corrupts memory, refused global)."""
  command = f"touch {marker}"
  code = f"open({str(marker)!r}, 'w').close()"
  return [
      ("os.system", _Reduce(os.system, command), f"{os.system.__module__}.system"),
      ("builtins.exec", _Reduce(builtins.exec, code), "builtins.exec"),
      ("builtins.eval", _Reduce(builtins.eval, code), "builtins.eval"),
      ("subprocess.Popen", _Reduce(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
      ("reduce of a user function", _Reduce(_touch, str(marker)), f"{__name__}._touch"),
      ("setstate of a user class", _SetState(str(marker)), f"{__name__}._SetState"),
      ("object array", np.array([_Reduce(os.system, command)], dtype=object), "numpy dtype 'O8'"),
      (
          "dtype flagged as holding objects",
          _Array((1, (8,), _Dtype((3, "|", None, None, None, -1, -1, 1)), False, b"\0" * 8)),
          "numpy dtype state",
      ),
  ]


def _batch(images=4, seed=0):
  """A small batch dict as the official files hold it (Python 2 keys as bytes)."""
  rng = np.random.default_rng(seed)
  return {
      b"batch_label": b"training batch 1 of 5",
      b"labels": rng.integers(0, 10, images).tolist(),
      b"data": rng.integers(0, 256, (images, 3072), dtype=np.uint8),
      b"filenames": [b"x_%d.png" % i for i in range(images)],
  }


def _hand_written_posix_system(marker) -> bytes:
  """Protocol 0 by hand: `posix.system("touch MARKER")`."""
  return b"cposix\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."


# (a) The official format.


def test_official_batches_load_as_pickle_loads_gives_them(cifar10_official):
  folder = cifar10_official / cifar10.FOLDER
  for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, "batches.meta"):
    blob = (folder / name).read_bytes()
    ours = safe_pickle.loads(blob, name)
    plain = pickle.loads(blob, encoding="bytes")
    assert ours.keys() == plain.keys(), name
    for key, value in plain.items():
      if isinstance(value, np.ndarray):
        assert type(ours[key]) is np.ndarray and ours[key].dtype == value.dtype, (name, key)
        np.testing.assert_array_equal(ours[key], value)
      else:
        assert ours[key] == value, (name, key)


def test_official_folder_and_tarball_through_the_loaders(cifar10_official, tmp_path):
  folder_data = cifar10.load_cifar10(
      str(cifar10_official), cache_dir=str(tmp_path / "unused"), download=False
  )
  assert folder_data.train_images.shape == (50000, 32, 32, 3)
  assert folder_data.test_images.shape == (10000, 32, 32, 3)
  assert folder_data.train_images.dtype == np.uint8
  assert np.bincount(folder_data.train_labels).tolist() == [5000] * 10
  assert np.bincount(folder_data.test_labels).tolist() == [1000] * 10
  tarball = cifar10_official / cifar10.TARBALL
  md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
  tar_data = cifar10.load_tarball(str(tarball), str(tmp_path / "cache"), expected_md5=md5)
  assert (tmp_path / "cache" / f"cifar10_{md5}.npz").exists()
  for field in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(tar_data, field), getattr(folder_data, field))


# (b) Refused: nothing runs.


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize(
    "case", range(len(_payloads("m"))), ids=[name for name, _, _ in _payloads("m")]
)
def test_a_batch_that_would_run_code_is_refused(tmp_path, case, protocol):
  marker = tmp_path / "marker"
  _, payload, refused = _payloads(marker)[case]
  blob = pickle.dumps({**_batch(), b"data": payload}, protocol=protocol)
  if protocol < 3:  # Python 3 writes Python 2's module names there.
    refused = refused.replace("builtins.", "__builtin__.").replace("subprocess.", "commands.")
  with pytest.raises(DataError) as error:
    cifar10.decode_batch(blob, "cifar-10-batches-py/data_batch_1")
  message = str(error.value)
  assert message.startswith("cifar-10-batches-py/data_batch_1: refused to unpickle "), message
  assert refused in message and "\n" not in message, message
  assert not marker.exists()


def test_a_hand_written_posix_system_is_refused(tmp_path):
  marker = tmp_path / "marker"
  with pytest.raises(
      DataError,
      match=r"^batch: refused to unpickle global 'posix.system' \(a "
      r"CIFAR-10 batch holds only numpy arrays, bytes, str, int, list and dict\)$",
  ):
    safe_pickle.loads(_hand_written_posix_system(marker), "batch")
  assert not marker.exists()


@pytest.mark.parametrize(
    "payload, refused",
    [
        (np.zeros(2, dtype=[("a", "i4")]), "numpy dtype 'V4'"),
        (_Dtype((3, "|", ("a",), None, None, -1, -1, 0)), "numpy dtype state"),
        (_Reduce(_RECONSTRUCT, np.ndarray, (1 << 40,), b"b"), "numpy _reconstruct"),
        (_Reduce(np.load, "x.npy"), "global 'numpy.load'"),
    ],
)
def test_numpy_beyond_plain_arrays_is_refused(payload, refused):
  with pytest.raises(DataError, match="refused to unpickle") as error:
    safe_pickle.loads(pickle.dumps(payload), "f")
  assert refused in str(error.value)


def test_state_only_for_what_was_made_here():
  with pytest.raises(DataError, match="refused to unpickle a state for list"):
    safe_pickle.loads(b"]}b.", "f")  # A list given a __dict__ by BUILD.


def test_a_refused_tarball_writes_no_cache(tmp_path):
  marker = tmp_path / "marker"
  src = tmp_path / "src" / cifar10.FOLDER
  src.mkdir(parents=True)
  for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
    (src / name).write_bytes(pickle.dumps(_batch(), protocol=2))
  (src / "data_batch_2").write_bytes(_hand_written_posix_system(marker))
  tarball = tmp_path / cifar10.TARBALL
  with tarfile.open(tarball, "w:gz") as tar:
    tar.add(src, arcname=cifar10.FOLDER)
  md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / "cifar10_other.npz").write_bytes(b"an earlier cache")
  with pytest.raises(DataError, match=r"data_batch_2: refused to unpickle global 'posix.system'"):
    cifar10.load_tarball(str(tarball), str(cache), expected_md5=md5)
  assert sorted(os.listdir(cache)) == ["cifar10_other.npz"]
  assert (cache / "cifar10_other.npz").read_bytes() == b"an earlier cache"
  assert not marker.exists()


def test_the_command_line_refuses_in_one_line(tmp_path):
  marker = tmp_path / "marker"
  folder = tmp_path / "data" / cifar10.FOLDER
  folder.mkdir(parents=True)
  (folder / "data_batch_1").write_bytes(
      pickle.dumps({**_batch(), b"data": _Reduce(os.system, f"touch {marker}")}, protocol=2)
  )
  proc = run_cli(
      [
          "--dataset=cifar10",
          f"--data_dir={tmp_path / 'data'}",
          "--nodownload",
          "--model=wrn-10-1",
          "--epochs=1",
          "--batch_size=32",
          f"--workspace={tmp_path / 'ws'}",
          "--name=refused",
      ],
      timeout=300,
  )
  assert_one_line_error(proc, "data_batch_1: refused to unpickle global 'posix.system'")
  assert not marker.exists()
  assert not (tmp_path / "ws" / "cache").exists() or not os.listdir(tmp_path / "ws" / "cache")


# (c) Allowed: plain data and numeric numpy.


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_and_numeric_arrays_load(protocol):
  value = {
      **_batch(),
      b"empty": [],
      "text": "é",
      3: (1, 2.5, None, True),
      b"big-endian": np.arange(6, dtype=">i4").reshape(2, 3),
      b"fortran": np.asfortranarray(np.ones((2, 3), np.float32)),
      b"complex": np.zeros(2, np.complex64),
      b"bool": np.array([True, False]),
      b"scalars": [np.int64(7), np.float32(2.5), np.bool_(True)],
  }
  blob = pickle.dumps(value, protocol=protocol)
  ours, plain = safe_pickle.loads(blob, "f"), pickle.loads(blob, encoding="bytes")
  assert ours.keys() == plain.keys()
  for key, expected in plain.items():
    got = ours[key]
    if isinstance(expected, np.ndarray):
      assert type(got) is np.ndarray and got.dtype == expected.dtype
      assert got.flags.f_contiguous == expected.flags.f_contiguous
      np.testing.assert_array_equal(got, expected)
    else:
      assert got == expected and type(got) is type(expected), key
      if key == b"scalars":
        assert [type(x) for x in got] == [type(x) for x in expected]


def test_python2_pickles_as_the_official_files_are_written():
  # Protocol 2 as Python 2 wrote it: str (BINSTRING) arguments, numpy 1's module name.
  blob = (
      b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\n"
      b"ndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02"
      b"u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U"
      b"\x06\x00\x01\x02\x03\x04\x05tbU\x06labelsq\x07]q\x08(K\x01K\x02eu."
  )
  plain = pickle.loads(blob, encoding="bytes")
  ours = safe_pickle.loads(blob, "f")
  np.testing.assert_array_equal(ours[b"data"], np.arange(6, dtype=np.uint8).reshape(2, 3))
  np.testing.assert_array_equal(ours[b"data"], plain[b"data"])
  assert ours[b"labels"] == plain[b"labels"] == [1, 2]
