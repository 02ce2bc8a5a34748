"""Find and load CIFAR-10 python batches offline, unpickling only what the format needs."""

from __future__ import annotations

import importlib.resources
import io
import os
import pickle
import pickletools
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnspec.language.errors import visible

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
REQUIRED_FILES = (*TRAIN_FILES, TEST_FILE)
TEST_ONLY_FILES = (TEST_FILE,)  # what re-scoring a model reads (evaluate): no training batches
META_FILE = "batches.meta"
ENV_VAR = "CNNSPEC_DATA"
DEFAULT_LABEL_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_PIXELS = 32 * 32 * 3


def scale_images(tf: Any, images: Any) -> Any:
    """uint8 images as the network's float32 input in 0..1, inside the TensorFlow graph.

    The notebook's `x.astype('float32') / 255`: a float32 division, bit for bit (a
    multiplication by 1/255 rounds differently). Every input path (single process, under a
    strategy, evaluation) scales through here, so seeded runs stay identical to the last digit.
    """
    return tf.cast(images, tf.float32) / tf.constant(255.0, tf.float32)


class DataError(Exception):
    """CIFAR-10 data that is missing, corrupt or unsafe; the message names the file or folder."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous, so compare by identity
class Cifar10:
    """CIFAR-10 as arrays: images uint8 NHWC (N, 32, 32, 3), unscaled; labels int64 (N,) in 0..9.

    `source` is the folder the batches were read from and `origin` says how it was found
    ("--data", "$CNNSPEC_DATA", "keras cache" or "bundled sample").
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    label_names: tuple[str, ...]
    source: Path
    origin: str = ""

    def describe(self) -> str:
        """One line, e.g. "1,000 train / 500 test images from DIR (bundled sample)"; the test
        images alone for data read without its training batches (load_cifar10's test_only)."""
        train = f"{len(self.x_train):,} train / " if len(self.x_train) else ""
        text = f"{train}{len(self.x_test):,} test images from {self.source}"
        return f"{text} ({self.origin})" if self.origin else text


# --- finding the folder ---


def _missing(folder: Path, required: tuple[str, ...] = REQUIRED_FILES) -> list[str]:
    return [name for name in required if not (folder / name).is_file()]


def _resolve(folder: Path, required: tuple[str, ...] = REQUIRED_FILES) -> Path | None:
    """`folder` if it holds the batches, else its `cifar-10-batches-py` child, else None."""
    for candidate in (folder, folder / FOLDER):
        if candidate.is_dir() and not _missing(candidate, required):
            return candidate
    return None


def _require(folder: Path, label: str, required: tuple[str, ...] = REQUIRED_FILES) -> Path:
    """The batches folder the user pointed at; a DataError saying what is wrong if there is none."""
    found = _resolve(folder, required)
    if found is not None:
        return found
    expected = f"expected a '{FOLDER}' folder (or its parent) holding {', '.join(required)}"
    if not folder.exists():
        raise DataError(f"{label} {folder}: no such directory; {expected}.", folder)
    if not folder.is_dir():
        raise DataError(f"{label} {folder}: not a directory; {expected}.", folder)
    inner = folder / FOLDER if (folder / FOLDER).is_dir() else folder
    missing = _missing(inner, required)
    raise DataError(
        f"{label} {folder}: missing {', '.join(str(inner / m) for m in missing)}; {expected}.",
        inner / missing[0],
    )


def _keras_cache_dirs(env: Mapping[str, str]) -> list[Path]:
    """Where Keras leaves CIFAR-10: `datasets/cifar-10-batches-py` (Keras 2) or inside
    `datasets/cifar-10-batches-py-target` (Keras 3), under $KERAS_HOME or ~/.keras."""
    if env.get("KERAS_HOME"):
        home = Path(env["KERAS_HOME"]).expanduser()
    else:
        try:
            home = Path.home() / ".keras"
        except RuntimeError:  # no home directory to speak of
            return []
    datasets = home / "datasets"
    return [datasets / FOLDER, datasets / f"{FOLDER}-target"]


def bundled_sample_dir() -> Path:
    """The small real sample shipped in `cnnspec.sample_data` (it may be absent in odd installs)."""
    try:
        resource = importlib.resources.files("cnnspec.sample_data") / FOLDER
    except ModuleNotFoundError:
        resource = None
    if isinstance(resource, Path) and resource.is_dir():
        return resource
    # Run from a source tree without an install (e.g. PYTHONPATH=dsl): the folder beside us.
    return Path(__file__).resolve().parents[1] / "sample_data" / FOLDER


def find_data_dir(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    required: tuple[str, ...] = REQUIRED_FILES,
) -> tuple[Path, str]:
    """The CIFAR-10 batches folder and where it came from.

    Searched in order: `explicit` (the CLI's `--data DIR`), `$CNNSPEC_DATA`, the Keras cache,
    then the bundled sample. A folder named by `explicit` or `$CNNSPEC_DATA` must hold the data
    (the folder itself or its parent); it is a DataError if it does not, never a silent
    fall-through. `env` defaults to `os.environ`. `required`: the files a folder must hold
    (TEST_ONLY_FILES to re-score a model).
    """
    env = os.environ if env is None else env
    if explicit is not None:
        return _require(Path(explicit).expanduser(), "--data", required), "--data"
    if env.get(ENV_VAR):
        return _require(Path(env[ENV_VAR]).expanduser(), f"${ENV_VAR}", required), f"${ENV_VAR}"
    searched = []
    for cache in _keras_cache_dirs(env):
        found = _resolve(cache, required)
        if found is not None:
            return found, "keras cache"
        searched.append(cache)
    bundled = bundled_sample_dir()
    if not _missing(bundled, required):
        return bundled, "bundled sample"
    searched.append(bundled)
    raise DataError(
        "no CIFAR-10 data found; looked in "
        + ", ".join(str(p) for p in searched)
        + f". Pass --data DIR or set ${ENV_VAR} to a '{FOLDER}' folder.",
        bundled,
    )


# --- reading one file, safely ---


def _shown(value: object) -> str:
    """A value from the file, for a message: bounded, however it was built (a tuple whose
    levels reuse each other through the pickle's memo is a few hundred bytes in the file and
    printed whole was a 600 MB message)."""
    return _clip(_REPR.repr(value))


def _clip(text: str) -> str:
    return text if len(text) <= 300 else text[:300] + "…"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict = 3, 8, 8, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 40, 40, 40


class _NdarrayName:
    """What the pickle's `numpy.ndarray` global resolves to: a name, never the real class.

    The format only passes `ndarray` to `_reconstruct`. Calling the real class is a way to
    allocate any size without sending the bytes (`ndarray((2_000_000, 3072), 'u1')` in a
    3 KB file asks for 5.7 GiB), so calling this stand-in is refused.
    """

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError("numpy.ndarray(...) called directly; a batch never does")

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayName()


class _PendingArray:
    """Stands in for the empty array `_reconstruct` makes; BUILD's state then becomes the array.

    numpy's own `__setstate__` would take the shape from the file; here the shape's size is
    checked against the raw bytes actually in the file before anything is allocated, so a
    declared size can never make the loader allocate more than the file holds.
    """

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("unexpected ndarray state")
        _version, shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise pickle.UnpicklingError(f"unexpected array shape {_shown(shape)}")
        if not isinstance(dtype, _PendingDtype):  # only the vetted stand-in makes a dtype
            raise pickle.UnpicklingError(f"unexpected array dtype {_shown(dtype)}")
        dtype = dtype.dtype
        if not isinstance(raw, bytes):
            raise pickle.UnpicklingError(f"array data must be bytes, not {type(raw).__name__}")
        count = 1
        for d in shape:  # Python ints: no overflow, however large the claim
            count *= d
        if count * dtype.itemsize != len(raw):
            raise _SizeMismatch(
                f"the array claims shape {shape} ({count * dtype.itemsize:,} bytes) but the "
                f"file holds {len(raw):,} bytes of it")
        array = np.frombuffer(raw, dtype=dtype).copy()
        self.array = array.reshape(shape, order="F" if fortran else "C")


class _SizeMismatch(pickle.UnpicklingError):
    """A declared size that the bytes present cannot back (reported as such, not 'corrupt')."""


def _new_ndarray(subtype: object, shape: object, typecode: object) -> _PendingArray:
    """Stands in for numpy's `_reconstruct`: a placeholder that BUILD turns into the array."""
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(
            f"unexpected array reconstruction {_shown(subtype)}, {_shown(shape)}")
    return _PendingArray()


_INTEGER_DTYPES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8"})


class _PendingDtype:
    """Stands in for the `numpy.dtype` a batch's pickle makes: an integer kind only (no object
    arrays), whose BUILD state must be a plain integer type's, a byte order and nothing else.

    Why not a real dtype: BUILD runs numpy's own `dtype.__setstate__`, which takes a subarray
    shape, fields or names from the file, and a dtype so altered still says `|u1`, itemsize 1:
    a 3 KB batch then read 100,000 bytes for each byte it holds (a crash past the buffer's
    end). The real dtype is made from the name and byte order only, once both are checked.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(name)

    def __setstate__(self, state: object) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) == 8 else None
        if isinstance(order, bytes):  # the official Python 2 files, read with bytes strings
            order = order.decode("latin1")
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] in (3, 4)
                and order in ("<", ">", "|", "=") and state[2:] == (None, None, None,
                                                                   -1, -1, 0)):
            raise pickle.UnpicklingError(f"unexpected dtype state {_shown(state)}")
        self.dtype = np.dtype(self.name).newbyteorder(order) if order in "<>" else np.dtype(
            self.name)

    def __repr__(self) -> str:
        return f"dtype({self.name!r})"


def _integer_dtype(obj: object, align: object = False, copy: object = True) -> _PendingDtype:
    """Stands in for `numpy.dtype`: integer kinds only (see _PendingDtype)."""
    name = obj.decode("latin1") if isinstance(obj, bytes) else obj
    if name not in _INTEGER_DTYPES:
        raise pickle.UnpicklingError(f"dtype {_shown(obj)} is not an integer type")
    return _PendingDtype(name)


def _from_buffer(buf: object, dtype: object, shape: object, order: object = "C"
                 ) -> _PendingArray:
    """Stands in for numpy's `_frombuffer` (an array in pickle protocol 5): the same checks
    as a protocol-2 array's BUILD (_PendingArray), the bytes being the ones in the file."""
    if not isinstance(buf, bytes | bytearray) or order not in ("C", "F"):
        raise pickle.UnpicklingError("unexpected array in protocol 5")
    pending = _PendingArray()
    pending.__setstate__((1, shape, dtype, order == "F", bytes(buf)))
    return pending


def _integer_scalar(dtype: object, raw: object) -> int:
    """Stands in for numpy's `scalar` (a numpy integer pickled alone, as in labels written as
    `list(numpy_array)`): a plain int, read from exactly the bytes of one value."""
    if not isinstance(dtype, _PendingDtype) or not isinstance(raw, bytes) \
            or len(raw) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("unexpected numpy scalar")
    return int(np.frombuffer(raw, dtype=dtype.dtype)[0])


def _empty_bytes(*args: object) -> bytes:
    """Stands in for `bytes`, which protocol 2 calls with no argument for b"" (an empty
    batch's data). Any argument is refused: `bytes(10**10)` would allocate 10 GB."""
    if args:
        raise pickle.UnpicklingError("bytes(...) called with an argument; a batch never does")
    return b""


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    """Stands in for `_codecs.encode`, which Python 3 protocol-2 pickles use for raw bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode(..., {_shown(encoding)})")
    return text.encode("latin1")


# The only globals a CIFAR-10 batch refers to. Official files (Python 2 cPickle) name the first,
# third and fourth; numpy 2 writes `numpy._core`; Python 3 protocol-2 pickles add
# `_codecs.encode`. Each maps to a vetted stand-in or a class; nothing is ever imported.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _new_ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _new_ndarray,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _integer_dtype,
    ("_codecs", "encode"): _latin1_encode,
    # what a subset written from Python 3 may hold besides: an empty batch's b"" (protocol
    # 2), labels as numpy integers (`list(array)`), arrays in protocol 5
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy.core.multiarray", "scalar"): _integer_scalar,
    ("numpy._core.multiarray", "scalar"): _integer_scalar,
    ("numpy.core.numeric", "_frombuffer"): _from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _from_buffer,
}


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS`; any other global is refused before it is looked up."""

    def __init__(self, file: object, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refused to load: the pickle asks for {module}.{name}, which a "
                "CIFAR-10 batch never uses (it is never imported or run). Replace the file "
                "with an official copy, or write it as a dict of a uint8 numpy array "
                "(b'data') and a list of ints (b'labels').",
                self._path,
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not part of the format")


def _check_declared_sizes(blob: bytes) -> None:
    """Every length the pickle declares must fit in the bytes that follow it.

    Read before unpickling, by pickletools (pure Python, reading from a BytesIO, which never
    returns more than is there): a 5-byte BINSTRING header claiming 2 GiB is refused here
    instead of becoming a 2 GiB read buffer. Arrays are checked the same way in _PendingArray.
    """
    try:
        for _ in pickletools.genops(io.BytesIO(blob)):
            pass
    except ValueError as e:
        raise _SizeMismatch(str(e)) from None


def _read_pickle(path: Path) -> dict[str, object]:
    """The dict in one batch file, keys as str; a DataError naming `path` for anything else.

    Memory is bounded by the file's size: the bytes are read once, every declared length is
    checked against them, and arrays are built only from bytes present in the file.
    """
    try:
        blob = path.read_bytes()
        _check_declared_sizes(blob)
        obj = _BatchUnpickler(io.BytesIO(blob), path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found", path) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}", path) from None
    except _SizeMismatch as e:
        raise DataError(
            f"{path}: not a readable CIFAR-10 pickle (truncated or corrupt: a size it declares "
            f"does not match the bytes in the file: {e}). Nothing that size was allocated; "
            "replace the file with an official copy.",
            path,
        ) from None
    except Exception as e:  # anything that goes wrong decoding untrusted bytes is bad data
        raise DataError(
            f"{path}: not a readable CIFAR-10 pickle (truncated or corrupt: "
            f"{type(e).__name__}: {_clip(str(e))}). Replace it with an official copy.",
            path,
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}", path)
    out: dict[str, object] = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin1")
        if isinstance(value, _PendingArray):
            if value.array is None:
                raise DataError(f"{path}: an array without its data", path)
            value = value.array
        if isinstance(key, str):
            out[key] = value
    return out


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch as (images uint8 NHWC, labels int64), validated."""
    d = _read_pickle(path)
    absent = [k for k in ("data", "labels") if k not in d]
    if absent:
        raise DataError(
            f"{path}: missing key(s) {', '.join(absent)}; found {sorted(d)}, expected "
            "batch_label, labels and data",
            path,
        )
    data = d["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.dtype.fields is not None
        or data.ndim != 2
        or data.shape[1] != _PIXELS
    ):
        found = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(f"{path}: 'data' must be a uint8 N x {_PIXELS} array, found {found}", path)
    n = data.shape[0]
    if n == 0:
        raise DataError(f"{path}: holds no images", path)
    labels = _label_array(d["labels"])
    if labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be a list of integers 0..9", path)
    if len(labels) != n:
        raise DataError(f"{path}: {len(labels)} labels for {n} images", path)
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: label {int(labels[i])} at index {i} is outside 0..9 "
            f"({bad.size} bad label(s)); cnnspec reads CIFAR-10's format, 10 classes",
            path,
        )
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))  # -> NHWC
    return images, labels.astype(np.int64)


def _label_array(labels: object) -> np.ndarray | None:
    """The labels as an array, or None when they are not a list of ints (or an integer array).
    Checked before numpy sees them: a list of lists that shares its rows through the pickle's
    memo is a few KB in the file and gigabytes once numpy copies it out."""
    if isinstance(labels, np.ndarray):
        return labels
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):  # noqa: E721
        return None  # (bool is no label, nor is a nested list)
    try:
        return np.asarray(labels, dtype=np.int64)
    except OverflowError:  # an int past int64: no label
        return None


def _read_label_names(folder: Path) -> tuple[str, ...]:
    path = folder / META_FILE
    if not path.is_file():
        return DEFAULT_LABEL_NAMES
    names = _read_pickle(path).get("label_names")
    if not isinstance(names, list | tuple) or len(names) != 10:
        raise DataError(f"{path}: 'label_names' must be a list of 10 names", path)
    out = []
    for name in names:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if not isinstance(name, str):
            raise DataError(f"{path}: 'label_names' must be a list of 10 names", path)
        # names are only shown (tables, metrics.json): a control character in one would act
        # on the terminal (ESC recolours it), so it is kept as its visible sign instead
        out.append(visible(name))
    return tuple(out)


RECORDED = "recorded data folder"  # how errors name a run's recorded folder (load_cifar10)


def load_cifar10(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    limit: int | None = None,
    *,
    recorded_origin: str | None = None,
    test_only: bool = False,
) -> Cifar10:
    """Load CIFAR-10 from the folder `find_data_dir(explicit, env)` picks.

    Reads all five `data_batch_*` files and `test_batch` (each may hold any number of images),
    and label names from `batches.meta` when present. Images stay uint8 in 0..255: scaling
    happens in the training graph. `limit` keeps the first `limit` training images.

    recorded_origin: `explicit` is a folder a run recorded (resume, evaluate), not the user's
    `--data`; the data keeps the origin the run recorded for it ("bundled sample", ...), and a
    missing folder is named as the recorded one.

    test_only: read `test_batch` alone (re-scoring a trained model needs no training batches,
    and a folder of test images only is enough); the training arrays are then empty.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    required = TEST_ONLY_FILES if test_only else REQUIRED_FILES
    if recorded_origin is not None and explicit is not None:
        folder = _require(Path(explicit).expanduser(), RECORDED, required)
        origin = recorded_origin
    else:
        folder, origin = find_data_dir(explicit, env, required)
    x_test, y_test = _read_batch(folder / TEST_FILE)
    empty = (x_test[:0], y_test[:0])  # the shapes and types of an image batch, no images
    train = [empty] if test_only else [_read_batch(folder / name) for name in TRAIN_FILES]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    if limit is not None and limit < len(x_train):
        x_train, y_train = x_train[:limit].copy(), y_train[:limit].copy()
    return Cifar10(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        label_names=_read_label_names(folder),
        source=folder,
        origin=origin,
    )
