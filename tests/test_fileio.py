"""nkd.fileio: a failed write leaves the previous file intact and no temporary file; a download
is checked before it is put in place."""

import hashlib
import json
import os

import numpy as np
import pytest

from nkd import fileio
from nkd.errors import DataError

PAYLOAD = b"nkd" * 100_000


def test_write_json_and_arrays_round_trip(tmp_path):
  fileio.write_json(str(tmp_path / "sub" / "a.json"), {"b": 1, "a": [1.5]})
  text = (tmp_path / "sub" / "a.json").read_text()
  assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
  assert json.loads(text) == {"a": [1.5], "b": 1}
  array = np.arange(12, dtype=np.uint8).reshape(3, 4)
  fileio.save_npy(str(tmp_path / "x.npy"), array)
  np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), array)
  fileio.save_npz(str(tmp_path / "y.npz"), images=array, labels=array[0])
  with np.load(tmp_path / "y.npz") as z:
    np.testing.assert_array_equal(z["labels"], array[0])
  assert sorted(os.listdir(tmp_path)) == ["sub", "x.npy", "y.npz"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "results.json"
  fileio.write_json(str(path), {"old": True})
  with pytest.raises(TypeError):
    fileio.write_json(str(path), {"new": object()})  # not JSON: fails half-way
  assert json.loads(path.read_text()) == {"old": True}
  with pytest.raises(KeyboardInterrupt):
    with fileio.atomic_write(str(path)) as f:
      f.write("half")
      raise KeyboardInterrupt
  assert json.loads(path.read_text()) == {"old": True}
  assert os.listdir(tmp_path) == ["results.json"]
  with pytest.raises(ValueError, match="mode"):
    with fileio.atomic_write(str(path), "a"):
      pass


def test_file_digest(tmp_path):
  (tmp_path / "f").write_bytes(PAYLOAD)
  assert fileio.file_digest(str(tmp_path / "f")) == hashlib.md5(PAYLOAD).hexdigest()
  assert fileio.file_digest(str(tmp_path / "f"), "sha256") == hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path_factory):
  """A URL to PAYLOAD (urllib reads file:// URLs as it reads http ones)."""
  path = tmp_path_factory.mktemp("server") / "file.bin"
  path.write_bytes(PAYLOAD)
  return path.as_uri()


def test_download_checks_the_digest_before_renaming(server, tmp_path):
  dest = str(tmp_path / "file.bin")
  digests = fileio.download(server, dest, md5=hashlib.md5(PAYLOAD).hexdigest())
  assert digests == {
      "md5": hashlib.md5(PAYLOAD).hexdigest(),
      "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
  }
  assert open(dest, "rb").read() == PAYLOAD and os.listdir(tmp_path) == ["file.bin"]
  other = str(tmp_path / "other.bin")
  with pytest.raises(DataError, match=f"download from {server}: sha256 .* does not match"):
    fileio.download(server, other, sha256="0" * 64)
  assert os.listdir(tmp_path) == ["file.bin"]  # neither other.bin nor other.bin.part


def test_offline_download_leaves_nothing(tmp_path):
  with pytest.raises(OSError):
    fileio.download("http://127.0.0.1:9/x.tar.gz", str(tmp_path / "x.tar.gz"), timeout_s=5)
  assert not os.listdir(tmp_path)
