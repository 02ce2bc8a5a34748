"""Regenerate the bundled CIFAR-10 sample from the shared subset, byte-for-byte in the same format.

Usage (from the repository root):

    python dsl/sample_data/make_sample.py            # write dsl/sample_data/cifar-10-batches-py/
    python dsl/sample_data/make_sample.py --check    # fail if the bundled files differ

The official batches are protocol-2 pickles written by Python 2's cPickle: a dict with
Python-2 `str` keys (`batch_label`, `labels`, `data`), the labels as a list of ints and the
images as a uint8 numpy array rebuilt through `numpy.core.multiarray._reconstruct`. A
Python 3 `pickle.dumps` would write something else (unicode keys, memo opcodes,
`numpy._core` and `_codecs.encode` globals), so this script writes the opcodes itself, and
before writing anything it proves the writer right: re-encoding each full source batch must
give back the source file's exact bytes.
"""

from __future__ import annotations

import argparse
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / ".." / "shared" / "data" / "cifar-10-batches-py"
DEFAULT_OUT = HERE / "cifar-10-batches-py"

TRAIN_PER_BATCH = 200
TEST_IMAGES = 500
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]

# The globals the official files reference; nothing else is resolved while reading them.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.empty(0))[0]  # numpy's _reconstruct, either version
        return getattr(np, name)


def read_batch(path: Path) -> dict[bytes, object]:
    with path.open("rb") as f:
        return _NumpyOnlyUnpickler(f, encoding="bytes").load()


# --- a writer for exactly the opcodes cPickle (protocol 2) used for the official batches ---


def _int(n: int) -> bytes:
    if 0 <= n < 0x100:
        return b"K" + bytes([n])  # BININT1
    if 0 <= n < 0x10000:
        return b"M" + struct.pack("<H", n)  # BININT2
    return b"J" + struct.pack("<i", n)  # BININT


def _str(s: bytes) -> bytes:
    """A Python 2 `str` (read back as bytes with encoding='bytes')."""
    if len(s) < 0x100:
        return b"U" + bytes([len(s)]) + s  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(s)) + s  # BINSTRING


def _int_list(values: list[int]) -> bytes:
    out = [b"]"]  # EMPTY_LIST, then items in batches of 1000 as cPickle does
    for start in range(0, len(values), 1000):
        chunk = values[start : start + 1000]
        if len(chunk) == 1:
            out.append(_int(chunk[0]) + b"a")  # APPEND
        else:
            out.append(b"(" + b"".join(_int(v) for v in chunk) + b"e")  # MARK ... APPENDS
    return b"".join(out)


def _uint8_matrix(a: np.ndarray) -> bytes:
    if a.dtype != np.uint8 or a.ndim != 2:
        raise ValueError(f"expected a 2-d uint8 array, got {a.dtype} {a.shape}")
    rows, cols = a.shape
    return b"".join(
        [
            b"cnumpy.core.multiarray\n_reconstruct\n",
            b"cnumpy\nndarray\n",
            _int(0) + b"\x85" + _str(b"b") + b"\x87R",  # _reconstruct(ndarray, (0,), 'b')
            b"(" + _int(1) + _int(rows) + _int(cols) + b"\x86",  # state: version 1, shape
            b"cnumpy\ndtype\n" + _str(b"u1") + _int(0) + _int(1) + b"\x87R",  # dtype('u1',0,1)
            b"(" + _int(3) + _str(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb",
            b"\x89" + _str(np.ascontiguousarray(a).tobytes()) + b"tb",  # not Fortran, raw bytes
        ]
    )


def encode_batch(batch_label: bytes, labels: list[int], data: np.ndarray) -> bytes:
    """One batch file's bytes, in the official layout: keys batch_label, labels, data."""
    return b"".join(
        [
            b"\x80\x02}(",  # PROTO 2, EMPTY_DICT, MARK
            _str(b"batch_label") + _str(batch_label),
            _str(b"labels") + _int_list(labels),
            _str(b"data") + _uint8_matrix(data),
            b"u.",  # SETITEMS, STOP
        ]
    )


def _parts(d: dict[bytes, object], path: Path) -> tuple[bytes, list[int], np.ndarray]:
    if list(d) != [b"batch_label", b"labels", b"data"]:
        raise SystemExit(f"{path}: unexpected keys {list(d)}")
    return d[b"batch_label"], [int(v) for v in d[b"labels"]], d[b"data"]


def build(source: Path) -> dict[str, bytes]:
    """The sample's files by name, after checking the writer against every source batch."""
    files: dict[str, bytes] = {}
    plan = [
        (name, TRAIN_PER_BATCH, f"training batch {i} of 5")
        for i, name in enumerate(TRAIN_BATCHES, 1)
    ] + [("test_batch", TEST_IMAGES, "testing batch 1 of 1")]
    for name, n, title in plan:
        path = source / name
        original = path.read_bytes()
        label, labels, data = _parts(read_batch(path), path)
        if encode_batch(label, labels, data) != original:
            raise SystemExit(f"{path}: re-encoding does not reproduce the file; writer is wrong")
        if len(labels) < n:
            raise SystemExit(f"{path}: has {len(labels)} images, need at least {n}")
        files[name] = encode_batch(
            f"{title} (first {n} images)".encode("ascii"), labels[:n], data[:n]
        )
    files["batches.meta"] = (source / "batches.meta").read_bytes()
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="shared CIFAR-10 folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the sample")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = ap.parse_args(argv)

    files = build(args.source)
    if args.check:
        stale = [
            n
            for n, b in files.items()
            if not (args.out / n).is_file() or (args.out / n).read_bytes() != b
        ]
        for n in stale:
            print(f"differs: {args.out / n}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        (args.out / n).write_bytes(b)
        print(f"{args.out / n}: {len(b):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
