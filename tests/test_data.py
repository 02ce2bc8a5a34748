"""Tests for training.data: finding CIFAR-10, loading it, and refusing bad or hostile files."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnspec.training.data import (
    DEFAULT_LABEL_NAMES,
    FOLDER,
    REQUIRED_FILES,
    DataError,
    bundled_sample_dir,
    find_data_dir,
    load_cifar10,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / FOLDER
BUNDLED = bundled_sample_dir()


def _need_shared() -> Path:
    if not (SHARED / "data_batch_1").is_file():
        pytest.skip(f"../shared/data not present: {SHARED} has no data_batch_1")
    return SHARED


@pytest.fixture(autouse=True)
def _no_ambient_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home (so no Keras cache is found) and no data variables from the machine."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CNNSPEC_DATA", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    return home


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample."""
    dest = tmp_path / "copy" / FOLDER
    shutil.copytree(BUNDLED, dest)
    return dest


def _raw(path: Path) -> dict[bytes, object]:
    # Plain pickle, only ever on the bundled file, which make_sample.py writes opcode by opcode.
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def _write_batch(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


# --- the bundled sample ---


def test_bundled_sample_is_found_and_loads() -> None:
    folder, origin = find_data_dir(None, env={})
    assert (folder, origin) == (BUNDLED, "bundled sample")

    data = load_cifar10(env={})
    assert data.source == BUNDLED
    assert data.x_train.shape == (1000, 32, 32, 3)
    assert data.x_test.shape == (500, 32, 32, 3)
    assert data.x_train.dtype == np.uint8 and data.x_test.dtype == np.uint8
    assert data.y_train.shape == (1000,) and data.y_test.shape == (500,)
    assert data.y_train.dtype.kind == "i" and data.y_test.dtype.kind == "i"
    for y in (data.y_train, data.y_test):
        assert y.min() >= 0 and y.max() <= 9
        assert set(np.unique(y)) == set(range(10))  # real images of every class
    assert data.x_train.max() > 200 and data.x_train.min() < 50  # unscaled 0..255
    assert data.label_names == DEFAULT_LABEL_NAMES
    assert data.describe() == f"1,000 train / 500 test images from {BUNDLED} (bundled sample)"


def test_bundled_images_match_an_independent_decoding() -> None:
    data = load_cifar10(env={})
    for k, name in enumerate(REQUIRED_FILES):
        raw = _raw(BUNDLED / name)
        rows = np.asarray(raw[b"data"])
        nhwc = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        if name == "test_batch":
            x, y = data.x_test, data.y_test
        else:
            x, y = data.x_train[200 * k : 200 * (k + 1)], data.y_train[200 * k : 200 * (k + 1)]
        assert np.array_equal(x, nhwc)
        assert list(y) == list(raw[b"labels"])
    # Channel order: pixel (0, 0) of image 0 is (row[0], row[1024], row[2048]).
    row = np.asarray(_raw(BUNDLED / "data_batch_1")[b"data"])[0]
    assert tuple(data.x_train[0, 0, 0]) == (row[0], row[1024], row[2048])
    assert tuple(data.x_train[0, 31, 31]) == (row[1023], row[2047], row[3071])


def test_bundled_files_have_the_official_layout() -> None:
    for name in REQUIRED_FILES:
        blob = (BUNDLED / name).read_bytes()
        assert blob[:2] == b"\x80\x02"  # protocol 2
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in blob  # as written by Python 2
        assert list(_raw(BUNDLED / name)) == [b"batch_label", b"labels", b"data"]


def test_keras_reads_the_bundled_sample() -> None:
    cifar = pytest.importorskip("keras.src.datasets.cifar")
    data = load_cifar10(env={})
    x, y = cifar.load_batch(str(BUNDLED / "test_batch"))
    assert x.shape == (500, 3, 32, 32)
    assert np.array_equal(x.transpose(0, 2, 3, 1), data.x_test)
    assert list(y) == list(data.y_test)


# --- the shared subset ---


def test_shared_subset_loads_and_the_sample_is_its_prefix() -> None:
    shared = _need_shared()
    full = load_cifar10(shared, env={})
    assert full.x_train.shape == (5000, 32, 32, 3) and full.x_test.shape == (1000, 32, 32, 3)
    assert full.origin == "--data"
    sample = load_cifar10(env={})
    for k in range(5):
        assert np.array_equal(
            sample.x_train[200 * k : 200 * (k + 1)], full.x_train[1000 * k : 1000 * k + 200]
        )
        assert np.array_equal(
            sample.y_train[200 * k : 200 * (k + 1)], full.y_train[1000 * k : 1000 * k + 200]
        )
    assert np.array_equal(sample.x_test, full.x_test[:500])
    assert np.array_equal(sample.y_test, full.y_test[:500])


def test_sample_regenerates_byte_for_byte() -> None:
    _need_shared()
    from cnnspec.sample_data import make_sample

    assert make_sample.main(["--source", str(SHARED), "--out", str(BUNDLED), "--check"]) == 0


# --- where the data comes from ---


def test_search_order(tmp_path: Path, _no_ambient_data: Path) -> None:
    explicit = tmp_path / "explicit" / FOLDER
    from_env = tmp_path / "env" / FOLDER
    cache = _no_ambient_data / ".keras" / "datasets" / FOLDER
    for d in (explicit, from_env, cache):
        shutil.copytree(BUNDLED, d)
    env = {"CNNSPEC_DATA": str(from_env)}

    assert find_data_dir(explicit, env) == (explicit, "--data")
    assert find_data_dir(None, env) == (from_env, "$CNNSPEC_DATA")
    assert find_data_dir(None, {}) == (cache, "keras cache")
    assert find_data_dir(None, {"CNNSPEC_DATA": ""}) == (cache, "keras cache")
    shutil.rmtree(cache)
    assert find_data_dir(None, {}) == (BUNDLED, "bundled sample")

    data = load_cifar10(explicit, env)
    assert data.source == explicit and data.origin == "--data"
    assert data.describe().endswith(f"from {explicit} (--data)")


def test_parent_folder_is_accepted(sample: Path) -> None:
    assert find_data_dir(sample.parent, {}) == (sample, "--data")
    assert find_data_dir(str(sample.parent), {}) == (sample, "--data")
    assert find_data_dir(None, {"CNNSPEC_DATA": str(sample.parent)}) == (sample, "$CNNSPEC_DATA")


def test_keras3_cache_layout_and_keras_home(tmp_path: Path, _no_ambient_data: Path) -> None:
    keras3 = _no_ambient_data / ".keras" / "datasets" / f"{FOLDER}-target" / FOLDER
    shutil.copytree(BUNDLED, keras3)
    assert find_data_dir(None, {}) == (keras3, "keras cache")

    keras_home = tmp_path / "kh"
    shutil.copytree(BUNDLED, keras_home / "datasets" / FOLDER)
    assert find_data_dir(None, {"KERAS_HOME": str(keras_home)}) == (
        keras_home / "datasets" / FOLDER,
        "keras cache",
    )


def test_bad_explicit_folder_never_falls_through(tmp_path: Path, sample: Path) -> None:
    good_env = {"CNNSPEC_DATA": str(sample)}
    with pytest.raises(DataError, match="--data .*nowhere: no such directory"):
        find_data_dir(tmp_path / "nowhere", good_env)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"--data .*missing .*data_batch_1.*test_batch"):
        find_data_dir(empty, good_env)
    with pytest.raises(DataError, match=r"\$CNNSPEC_DATA .*nowhere: no such directory"):
        find_data_dir(None, {"CNNSPEC_DATA": str(tmp_path / "nowhere")})


def test_nothing_found_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnspec.training.data

    monkeypatch.setattr(cnnspec.training.data, "bundled_sample_dir", lambda: tmp_path / "gone")
    with pytest.raises(DataError, match="no CIFAR-10 data found.*gone"):
        load_cifar10(None, {})


# --- broken files ---


def test_missing_test_batch_is_named(sample: Path) -> None:
    (sample / "test_batch").unlink()
    with pytest.raises(DataError) as e:
        load_cifar10(sample, {})
    assert str(sample / "test_batch") in str(e.value)
    assert e.value.path == sample / "test_batch"


def test_test_only_needs_the_test_batch_alone(sample: Path) -> None:
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        (sample / name).unlink()
    with pytest.raises(DataError, match="missing"):  # training needs them still
        load_cifar10(sample, {})
    data = load_cifar10(sample, {}, test_only=True)
    x, y = _raw(sample / "test_batch")[b"data"], _raw(sample / "test_batch")[b"labels"]
    assert data.x_train.shape == (0, 32, 32, 3) and data.y_train.shape == (0,)
    np.testing.assert_array_equal(  # the official layout: 3 planes of 32x32, NCHW rows
        data.x_test, np.asarray(x).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(data.y_test, y)
    assert data.describe().startswith(f"{len(y):,} test images from ")
    (sample / "test_batch").unlink()
    with pytest.raises(DataError) as e:
        load_cifar10(sample, {}, test_only=True)
    assert e.value.path == sample / "test_batch"
    assert "holding test_batch." in str(e.value)


def test_truncated_file_is_named(sample: Path) -> None:
    path = sample / "data_batch_3"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        load_cifar10(sample, {})
    assert str(path) in str(e.value) and e.value.path == path


@pytest.mark.parametrize("blob", [b"", b"\x80\x02}(U\x04data", b"not a pickle at all"])
def test_corrupt_files_are_named(sample: Path, blob: bytes) -> None:
    path = sample / "data_batch_5"
    path.write_bytes(blob)
    with pytest.raises(DataError) as e:
        load_cifar10(sample, {})
    assert str(path) in str(e.value)


def test_python3_written_batches_load(sample: Path) -> None:
    # Python 3's protocol 2 uses str keys, numpy._core and _codecs.encode; all are allowed.
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (7, 3072), dtype=np.uint8)
    _write_batch(sample / "data_batch_2", {"batch_label": "x", "labels": [3] * 7, "data": data})
    loaded = load_cifar10(sample, {})
    assert loaded.x_train.shape == (200 * 4 + 7, 32, 32, 3)  # N is read from each file
    assert np.array_equal(loaded.x_train[200:207], data.reshape(7, 3, 32, 32).transpose(0, 2, 3, 1))
    assert list(loaded.y_train[200:207]) == [3] * 7


def _good(n: int = 4) -> dict[bytes, object]:
    return {b"batch_label": b"x", b"labels": [1] * n, b"data": np.zeros((n, 3072), np.uint8)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({b"labels": None}, "'labels' must be a list of integers"),
        ({b"labels": [1, 2, 3]}, "3 labels for 4 images"),
        ({b"labels": [1, 2, 10, 4]}, r"label 10 at index 2 is outside 0\.\.9"),
        ({b"labels": [-1, 2, 3, 4]}, r"label -1 at index 0 is outside 0\.\.9"),
        ({b"labels": ["a", "b", "c", "d"]}, "'labels' must be a list of integers"),
        ({b"labels": [True, False, True, True]}, "'labels' must be a list of integers"),
        ({b"labels": [[1], [2], [3], [4]]}, "'labels' must be a list of integers"),
        ({b"data": np.zeros((4, 3072), np.int16)}, "must be a uint8 N x 3072 array, found int16"),
        ({b"data": np.zeros((4, 1024), np.uint8)}, r"found uint8 array of shape \(4, 1024\)"),
        ({b"data": np.zeros((4, 32, 32, 3), np.uint8)}, "must be a uint8 N x 3072 array"),
        ({b"data": b"\x00" * 3072 * 4}, "must be a uint8 N x 3072 array, found bytes"),
        ({b"data": np.zeros((4, 3072), np.float32)}, "truncated or corrupt"),
    ],
)
def test_invalid_batches_are_refused(sample: Path, change: dict, message: str) -> None:
    path = sample / "data_batch_4"
    _write_batch(path, {**_good(), **change})
    with pytest.raises(DataError, match=message) as e:
        load_cifar10(sample, {})
    assert str(path) in str(e.value)


def test_empty_batch_is_refused(sample: Path) -> None:
    from cnnspec.sample_data.make_sample import encode_batch

    path = sample / "data_batch_4"
    path.write_bytes(encode_batch(b"x", [], np.zeros((0, 3072), np.uint8)))
    with pytest.raises(DataError, match="data_batch_4: holds no images"):
        load_cifar10(sample, {})
    # Python 3's protocol 2 writes the empty array's b"" as `__builtin__.bytes()`: the same
    # message, not "corrupt or hostile"
    _write_batch(path, {**_good(0), b"labels": []})
    with pytest.raises(DataError, match="data_batch_4: holds no images"):
        load_cifar10(sample, {})


@pytest.mark.parametrize("write", [
    lambda path, batch: path.write_bytes(pickle.dumps(batch, protocol=5)),  # _frombuffer
    lambda path, batch: _write_batch(  # labels as numpy integers: `list(array)`
        path, {**batch, b"labels": list(np.array(batch[b"labels"], dtype=np.int64))}),
    lambda path, batch: _write_batch(  # ... big-endian 32-bit ones
        path, {**batch, b"labels": list(np.array(batch[b"labels"], dtype=">i4"))}),
    lambda path, batch: _write_batch(  # labels as an integer array
        path, {**batch, b"labels": np.array(batch[b"labels"], dtype=np.uint8)}),
], ids=["protocol-5", "numpy-int64-labels", "big-endian-labels", "label-array"])
def test_other_ways_python_3_writes_a_batch_load(sample: Path, write) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, 5)]
    write(sample / "data_batch_2", {b"batch_label": b"x", b"labels": labels, b"data": data})
    loaded = load_cifar10(sample, {})
    assert np.array_equal(loaded.x_train[200:205], data.reshape(5, 3, 32, 32).transpose(0, 2, 3, 1))
    assert list(loaded.y_train[200:205]) == labels


def test_wrong_keys_and_wrong_type(sample: Path) -> None:
    path = sample / "data_batch_1"
    _write_batch(path, {b"batch_label": b"x", b"data": np.zeros((4, 3072), np.uint8)})
    with pytest.raises(DataError, match="missing key\\(s\\) labels"):
        load_cifar10(sample, {})
    _write_batch(path, [1, 2, 3])
    with pytest.raises(DataError, match="expected a pickled dict, found list"):
        load_cifar10(sample, {})


def test_batches_meta_is_optional_but_used(sample: Path) -> None:
    (sample / "batches.meta").unlink()
    assert load_cifar10(sample, {}).label_names == DEFAULT_LABEL_NAMES
    names = [f"c{i}".encode() for i in range(10)]
    _write_batch(sample / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    assert load_cifar10(sample, {}).label_names == tuple(f"c{i}" for i in range(10))
    _write_batch(sample / "batches.meta", {b"label_names": names[:3]})
    with pytest.raises(DataError, match="batches.meta: 'label_names' must be a list of 10"):
        load_cifar10(sample, {})


def test_label_names_cannot_act_on_the_terminal(sample: Path) -> None:
    """Label names are printed in tables: ESC in one would recolour the terminal, a newline
    would break the table's row. Each becomes its visible sign; the rest is kept."""
    names = [b"cat\x1b[31m", b"two\nlines"] + [f"c{i}".encode() for i in range(8)]
    _write_batch(sample / "batches.meta", {b"label_names": names})
    shown = load_cifar10(sample, {}).label_names
    assert shown[:2] == ("cat\u241b[31m", "two\u240alines") and shown[2] == "c0"


# --- hostile pickles ---


class _Gadget:
    """Pickles as a call to `func(*args)`, the classic pickle code-execution trick."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _gadgets(marker: Path) -> list[object]:
    return [
        _Gadget(os.system, f"touch '{marker}'"),
        _Gadget(open, str(marker), "w"),
        _Gadget(exec, f"open({str(marker)!r}, 'w')"),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["os.system", "builtins.open", "builtins.exec"])
def test_hostile_pickle_is_refused_without_running(sample: Path, tmp_path: Path, which: int):
    # The gadget is live: plain pickle runs it.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_gadgets(probe)[which], protocol=2))
    assert probe.exists()

    marker = tmp_path / "MARKER"
    path = sample / "data_batch_1"
    _write_batch(path, {b"batch_label": b"x", b"labels": [0], b"data": _gadgets(marker)[which]})
    with pytest.raises(DataError, match="refused to load: the pickle asks for") as e:
        load_cifar10(sample, {})
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_refused_global_is_never_imported(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "IMPORTED"
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "cnnspec_evil_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\nx = 1\n")
    monkeypatch.syspath_prepend(str(mods))
    blob = b"\x80\x02ccnnspec_evil_mod\nx\n."  # GLOBAL cnnspec_evil_mod.x
    (sample / "test_batch").write_bytes(blob)
    with pytest.raises(DataError, match="cnnspec_evil_mod.x"):
        load_cifar10(sample, {})
    assert not marker.exists() and "cnnspec_evil_mod" not in sys.modules


def test_object_arrays_are_refused(sample: Path) -> None:
    path = sample / "data_batch_1"
    _write_batch(path, {**_good(2), b"labels": np.array([1, 2], dtype=object)})
    with pytest.raises(DataError, match="dtype .*O.* is not an integer type") as e:
        load_cifar10(sample, {})
    assert str(path) in str(e.value)


# --- hostile sizes: nothing is allocated beyond what the file holds ---


def _pint(n: int) -> bytes:
    """A pickle int of any size: LONG1 (little-endian two's complement), as protocol 2 writes."""
    body = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(body)]) + body


def _pstr(b: bytes) -> bytes:
    return b"T" + struct.pack("<i", len(b)) + b  # BINSTRING


def _batch_with(data_pickle: bytes) -> bytes:
    """{batch_label, labels: [1], data: <data_pickle>} in the official protocol-2 layout."""
    return (b"\x80\x02}(" + _pstr(b"batch_label") + _pstr(b"x") + _pstr(b"labels")
            + b"]" + b"K\x01a" + _pstr(b"data") + data_pickle + b"u.")


def _reconstructed(rows: int, raw: bytes) -> bytes:
    """numpy's own pickling of a uint8 (rows, 3072) array, with `raw` as its bytes."""
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            + b"K\x00\x85" + _pstr(b"b") + b"\x87R"
            + b"(K\x01" + _pint(rows) + _pint(3072) + b"\x86"
            + b"cnumpy\ndtype\n" + _pstr(b"u1") + b"K\x00K\x01\x87R"
            + b"(K\x03" + _pstr(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            + b"\x89" + _pstr(raw) + b"tb")


def _direct(rows: int) -> bytes:
    """`numpy.ndarray((rows, 3072), dtype('u1'))`: a call that allocates without any bytes."""
    return (b"cnumpy\nndarray\n" + _pint(rows) + _pint(3072) + b"\x86"
            + b"cnumpy\ndtype\n" + _pstr(b"u1") + b"K\x00K\x01\x87R" + b"\x86R")


def _refused_as_batch_1(sample: Path, blob: bytes, message: str, size: int
                        ) -> tuple[DataError, int]:
    """Load the sample with `blob` (under `size` bytes) as data_batch_1: the DataError that
    must match `message` and name the file, and the peak memory traced while loading."""
    import tracemalloc

    path = sample / "data_batch_1"
    path.write_bytes(blob)
    assert path.stat().st_size < size
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=message) as e:
            load_cifar10(sample, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(e.value) and e.value.path == path
    return e.value, peak


_ONE_IMAGE = bytes(range(256)) * 12  # 3072 bytes: one image's worth


@pytest.mark.parametrize(("blob", "message"), [
    # 3.3 KB files whose array claims 2,000,000 images (5.7 GiB) or 10**12 (2.8 PiB)
    (_batch_with(_reconstructed(2_000_000, _ONE_IMAGE)),
     r"claims shape \(2000000, 3072\) \(6,144,000,000 bytes\) but the file holds 3,072"),
    (_batch_with(_reconstructed(10**12, _ONE_IMAGE)), "claims shape \\(1000000000000, 3072\\)"),
    # the same claims made by calling numpy.ndarray directly (no bytes at all)
    (_batch_with(_direct(2_000_000)), "numpy.ndarray"),
    (_batch_with(_direct(10**12)), "numpy.ndarray"),
    # a string header claiming 2 GiB, followed by 3 bytes
    (b"\x80\x02}(" + _pstr(b"data") + b"T" + struct.pack("<i", 2**31 - 1) + b"abc",
     "expected 2147483647 bytes"),
], ids=["reconstruct-2e6", "reconstruct-1e12", "direct-2e6", "direct-1e12", "binstring-2GiB"])
def test_declared_sizes_beyond_the_file_are_refused_without_allocating(
        sample: Path, blob: bytes, message: str) -> None:
    import time

    started = time.monotonic()
    _, peak = _refused_as_batch_1(sample, blob, message, 4000)
    # the real sample is ~3 MB in all; anything near the claimed sizes would be GiB
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert time.monotonic() - started < 30  # generous: "promptly" on any machine


def _subarray_dtype_array(length: int) -> bytes:
    """A one-image uint8 array whose dtype's BUILD gives it a subarray of `length` bytes: a
    dtype so altered still says `|u1`, itemsize 1, and numpy then read `length` bytes for each
    byte in the file (a crash past the buffer, or a 14 TiB allocation)."""
    plain_state = b"(K\x03" + _pstr(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    inner = b"cnumpy\ndtype\n" + _pstr(b"u1") + b"K\x00K\x01\x87R" + plain_state + b"b"
    state = (b"(K\x03" + _pstr(b"|") + b"(" + inner + b"(" + _pint(length) + b"tt"
             + b"NNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            + b"K\x00\x85" + _pstr(b"b") + b"\x87R"
            + b"(K\x01" + _pint(1) + _pint(3072) + b"\x86"
            + b"cnumpy\ndtype\n" + _pstr(b"u1") + b"K\x00K\x01\x87R" + state + b"b"
            + b"\x89" + _pstr(_ONE_IMAGE) + b"tb")


def _shared_rows_labels(rows: int, width: int) -> bytes:
    """{labels: a list of `rows` references to one list of `width` lists of 1000 ints, data:
    one image}: a few KB in the file, rows * width * 1000 values once numpy copies it out."""
    inner = b"]q\x01(" + b"K\x01" * 1000 + b"e"
    middle = b"]q\x02(" + b"h\x01" * width + b"e"
    outer = b"](" + b"h\x02" * rows + b"e"
    return (b"\x80\x02}(" + _pstr(b"batch_label") + _pstr(b"x") + _pstr(b"data")
            + _reconstructed(1, _ONE_IMAGE) + _pstr(b"labels") + inner + b"0" + middle + b"0"
            + outer + b"u.")


@pytest.mark.parametrize(("blob", "message"), [
    (_batch_with(_subarray_dtype_array(100_000)), "unexpected dtype state"),
    (_batch_with(_subarray_dtype_array(10**8)), "unexpected dtype state"),
    (_shared_rows_labels(200, 1000), "'labels' must be a list of integers"),
], ids=["subarray-1e5", "subarray-1e8", "shared-label-rows"])
def test_a_crafted_dtype_or_label_list_is_refused_without_allocating(
        sample: Path, blob: bytes, message: str) -> None:
    _, peak = _refused_as_batch_1(sample, blob, message, 12_000)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def _memo_shared_dtype_state(levels: int, width: int) -> bytes:
    """A dtype whose BUILD state is a tuple of `levels` levels, each `width` references to the
    level below through the pickle's memo: ~1 KB in the file, width**levels values printed."""
    out = b"\x80\x02(" + b"K\x07" * width + b"tq\x01"
    for i in range(1, levels):
        out += b"(" + (b"h" + bytes([i])) * width + b"tq" + bytes([i + 1])
    return (out + b"cnumpy\ndtype\n" + _pstr(b"u1") + b"K\x00K\x01\x87R"
            + b"h" + bytes([levels]) + b"b.")


def test_a_refusal_quotes_the_file_in_bounded_words(sample: Path) -> None:
    """The refusal names what it refused; a memo-shared value printed whole was a 600 MB
    message (1.2 GB, 20 s) from a 1 KB file."""
    error, peak = _refused_as_batch_1(sample, _memo_shared_dtype_state(4, 120),
                                      "unexpected dtype state", 1_100)
    assert len(str(error)) < 1_000 and peak < 64 * 2**20


def test_a_reconstructed_array_matches_numpys_own_pickle(sample: Path) -> None:
    """The stand-in builds exactly what numpy's unpickling builds, from the same bytes."""
    raw = bytes(range(256)) * 12 * 3
    path = sample / "data_batch_2"
    path.write_bytes(_batch_with(_reconstructed(3, raw)).replace(b"K\x01a", b"(K\x01K\x02K\x03e"))
    expected = pickle.loads(_reconstructed(3, raw) + b".", encoding="bytes")  # numpy's own
    assert expected.shape == (3, 3072) and expected.dtype == np.uint8
    loaded = load_cifar10(sample, {})
    images = loaded.x_train[200:203]
    assert np.array_equal(images, expected.reshape(3, 3, 32, 32).transpose(0, 2, 3, 1))
    assert list(loaded.y_train[200:203]) == [1, 2, 3]


# --- limit ---


def test_limit_keeps_the_first_images() -> None:
    full = load_cifar10(env={})
    part = load_cifar10(env={}, limit=237)
    assert part.x_train.shape == (237, 32, 32, 3) and part.y_train.shape == (237,)
    assert np.array_equal(part.x_train, full.x_train[:237])
    assert np.array_equal(part.y_train, full.y_train[:237])
    assert np.array_equal(part.x_test, full.x_test)  # the test set is never cut
    assert load_cifar10(env={}, limit=10**6).x_train.shape[0] == 1000
    with pytest.raises(ValueError, match="limit"):
        load_cifar10(env={}, limit=0)
