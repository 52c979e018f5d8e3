"""Weights files are data: code-carrying pickles are refused before anything runs; broken files are
clear errors naming the file."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from gn_det.checkpoint import UnsafeWeightsError, WeightsFileError, load_weights, read_weights_file

from contract_model import contract_model


class _Payload:
    """Unpickling this runs ``os.system(command)``: the classic malicious pickle."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pkl_is_refused_and_does_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"conv1_w": np.zeros((2, 3), np.float32), "x": _Payload(f"touch {marker}")}, f, protocol=protocol)
    with pytest.raises(UnsafeWeightsError) as e:
        load_weights(contract_model(), str(path))
    assert str(e.value) == (
        f"{path}: refusing to load: the pickle asks for '{os.system.__module__}.system', which is not data "
        "(weights .pkl files may hold only dicts, lists, tuples, strings, numbers and numpy arrays); "
        "nothing from the file was executed"
    )
    assert not marker.exists()


def test_malicious_pth_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    torch.save({"model": {"backbone.x": torch.zeros(1)}, "evil": _Payload(f"touch {marker}")}, path)
    with pytest.raises(UnsafeWeightsError, match=rf"^{path}: refusing to load: torch.load\(weights_only=True\) rejected it"):
        read_weights_file(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_of_every_protocol_load(tmp_path, protocol):
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, 2.5, "s", (np.float64(3.0),)],
            "c": np.zeros((0,), np.int64), "d": np.ones((2, 2), np.float64).T}
    path = tmp_path / "x.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    out = read_weights_file(str(path))
    np.testing.assert_array_equal(out["a"], data["a"])
    np.testing.assert_array_equal(out["d"], data["d"])
    assert out["b"][:3] == [1, 2.5, "s"] and float(out["b"][3][0]) == 3.0


def test_python2_latin1_pickle_loads(tmp_path):
    # Detectron's .pkl files come from Python 2: arrays' raw bytes are py2 str, read back as latin1
    arr = np.array([1.5, -2.0], np.float32)
    py2 = (b"\x80\x02}q\x00U\x07conv1_wq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00"
           b"\x85U\x01b\x87Rq\x04(K\x01K\x02\x85cnumpy\ndtype\nq\x05U\x02f4K\x00K\x01\x87Rq\x06(K\x03U\x01<NNNJ"
           b"\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x08" + arr.tobytes() + b"tbs.")
    path = tmp_path / "py2.pkl"
    path.write_bytes(py2)
    np.testing.assert_array_equal(read_weights_file(str(path))["conv1_w"], arr)


def test_truncated_pkl(tmp_path):
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}, f, protocol=2)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsFileError, match=rf"^{path}: cannot read the weights file \(pickle format\): it looks "
                                               r"truncated or corrupt \("):
        read_weights_file(str(path))


def test_truncated_pth(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"model": {"backbone.w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(WeightsFileError, match=rf"^{path}: cannot read the weights file .*truncated or corrupt"):
        read_weights_file(str(path))


def test_missing_empty_and_non_dict_files(tmp_path):
    with pytest.raises(WeightsFileError, match=r"nope.pth: no such weights file$"):
        read_weights_file(str(tmp_path / "nope.pth"))
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(WeightsFileError, match=r"empty.pkl: the weights file is empty"):
        read_weights_file(str(tmp_path / "empty.pkl"))
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(WeightsFileError, match=r"list.pth: holds a list, not a dict of tensors"):
        load_weights(contract_model(), str(tmp_path / "list.pth"))


# Hand-written pickles whose few bytes ask for far more memory than they hold (issue 11): each names a
# constructor the data unpickler must admit (arrays and bytes need them) with a huge size argument.
_HUGE = 800_000_000
_BININT = b"J" + _HUGE.to_bytes(4, "little")
_ALLOCATING_PICKLES = {
    "bytearray(n)": (b"\x80\x02c__builtin__\nbytearray\n" + _BININT + b"\x85R.", "bytearray(800000000)"),
    "bytes(n)": (b"\x80\x02cbuiltins\nbytes\n" + _BININT + b"\x85R.", "bytes(800000000)"),
    "ndarray(shape)": (b"\x80\x02cnumpy\nndarray\n" + _BININT + b"\x85\x85R.", "ndarray(800000000,)"),
    "_reconstruct(ndarray, shape, dtype)": (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _BININT + b"\x85U\x01b\x87R.",
        "an array of shape (800000000,)"),
}


@pytest.mark.parametrize("name", sorted(_ALLOCATING_PICKLES))
def test_pickle_cannot_allocate_more_than_the_file_holds(tmp_path, name):
    payload, what = _ALLOCATING_PICKLES[name]
    path = tmp_path / "tiny.pkl"
    path.write_bytes(payload)
    assert len(payload) < 80
    with pytest.raises(UnsafeWeightsError) as e:
        read_weights_file(str(path))
    nbytes = _HUGE * (8 if name == "ndarray(shape)" else 1)  # ndarray's default dtype is float64
    assert str(e.value) == (f"{path}: refusing to load: the pickle asks to allocate {nbytes / 2**20:.1f} MiB ({what}), "
                            f"more than a {len(payload)}-byte file can hold as data; the file is corrupt or "
                            "malicious, and nothing was allocated")


def test_small_allocations_of_the_same_constructors_still_load(tmp_path):
    """The bound is by size: bytearray(16) and an 8-element array from a tiny file are fine."""
    payload = (b"\x80\x02(c__builtin__\nbytearray\nK\x10\x85Rcnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
               b"K\x08\x85U\x01b\x87Rt.")
    path = tmp_path / "small.pkl"
    path.write_bytes(payload)
    data, array = read_weights_file(str(path))
    assert data == bytearray(16) and array.shape == (8,)


def test_length_field_larger_than_the_file_is_truncation(tmp_path):
    """BINBYTES8 claiming 1 TiB: read through a memory map, it allocates nothing and reads as truncated."""
    path = tmp_path / "liar.pkl"
    path.write_bytes(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.")
    with pytest.raises(WeightsFileError, match=r"it looks truncated or corrupt \(EOFError"):
        read_weights_file(str(path))


def test_unusual_codec_is_refused(tmp_path):
    path = tmp_path / "codec.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(UnsafeWeightsError, match="asks for the codec 'zlib'; data pickles use latin-1"):
        read_weights_file(str(path))
