"""The IDX format of MNIST and Fashion-MNIST (LeCun et al.), plain or gzipped."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from latentspace.errors import DataError

__all__ = ["read_idx"]

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file into an array of its stated shape; a `.gz` suffix is decompressed."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}; fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); fetch it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated ({len(raw)} bytes, expected {expected}); fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
