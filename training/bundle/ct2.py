"""Reader for CTranslate2 ``model.bin`` files.

Layout (little endian), as written by ``ctranslate2.specs.ModelSpec.save``::

    u32 binary_version
    str spec_name            (str = u16 length incl. NUL, then bytes)
    u32 spec_revision
    u32 num_variables
    num_variables x { str name; u8 rank; rank x u32 dim; u8 dtype; u32 nbytes; nbytes data }
    u32 num_aliases          (optional)
    num_aliases x { str alias; str target }

Arrays are returned as read-only views on a memory map; copy what you keep.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from ..model_store.errors import BundleError

_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: upper half of a float32, widened in as_float32
}
_BFLOAT16 = 5
SUPPORTED_BINARY_VERSIONS = (5, 6)


@dataclass
class Ct2Variable:
    name: str
    shape: tuple[int, ...]
    dtype_code: int
    data: np.ndarray

    def as_float32(self) -> np.ndarray:
        """The values as a new float32 array (bfloat16 widened)."""
        if self.dtype_code == _BFLOAT16:
            return (self.data.astype(np.uint32) << 16).view(np.float32).reshape(self.shape).copy()
        return np.array(self.data, dtype=np.float32).reshape(self.shape)


@dataclass
class Ct2Model:
    """The variables of a CTranslate2 model file (use as a context manager to release the map)."""

    path: Path
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, Ct2Variable]
    aliases: dict[str, str] = field(default_factory=dict)
    _mmap: mmap.mmap | None = None

    def __enter__(self) -> Ct2Model:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.variables.clear()
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a caller still holds a view; the map is freed with it
                pass
            self._mmap = None

    def __contains__(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def get(self, name: str) -> Ct2Variable:
        key = self.aliases.get(name, name)
        try:
            return self.variables[key]
        except KeyError:
            raise BundleError(f"{self.path}: variable {name!r} not found ({self.spec_name})") from None

    def float32(self, name: str) -> np.ndarray:
        """Weights as float32; int8/int16 weights are dequantised with their ``<name>_scale``."""
        var = self.get(name)
        if var.dtype_code in (1, 2) and name.endswith("weight") and f"{name}_scale" in self:
            scale = self.get(f"{name}_scale").as_float32()
            q = var.data.astype(np.float32).reshape(var.shape)
            return q / (scale.reshape(-1, *([1] * (q.ndim - 1))) if scale.ndim else scale)
        return var.as_float32()

    def scalar(self, name: str) -> int | float:
        return self.get(name).data.reshape(-1)[0].item()


def read_ct2(path: Path) -> Ct2Model:
    """Parse ``path`` (a CTranslate2 ``model.bin``); raise :class:`BundleError` on a damaged file."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BundleError(f"cannot open CTranslate2 model {path}: {e}") from e
    with f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    size = len(mm)
    off = 0

    def take(fmt: str) -> int:
        nonlocal off
        if off + struct.calcsize(fmt) > size:
            raise BundleError(f"{path}: truncated CTranslate2 file (header at byte {off} of {size})")
        (value,) = struct.unpack_from(fmt, mm, off)
        off += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal off
        n = take("<H")
        if off + n > size:
            raise BundleError(f"{path}: truncated CTranslate2 file (string at byte {off})")
        value = bytes(mm[off : off + n]).rstrip(b"\0").decode("utf-8")
        off += n
        return value

    version = take("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        mm.close()
        raise BundleError(
            f"{path}: CTranslate2 binary version {version} is not supported ({SUPPORTED_BINARY_VERSIONS})"
        )
    spec_name = string()
    revision = take("<I")
    variables: dict[str, Ct2Variable] = {}
    for _ in range(take("<I")):
        name = string()
        shape = tuple(take("<I") for _ in range(take("<B")))
        code = take("<B")
        nbytes = take("<I")
        if code not in _DTYPES:
            raise BundleError(f"{path}: variable {name} has unknown dtype code {code}")
        if off + nbytes > size:
            raise BundleError(
                f"{path}: truncated CTranslate2 file: variable {name} needs {nbytes} bytes at {off}, file has {size}"
            )
        dtype = _DTYPES[code]
        count = nbytes // dtype.itemsize
        if count != int(np.prod(shape, dtype=np.int64)):
            raise BundleError(f"{path}: variable {name} has {count} values for shape {shape}")
        data = np.frombuffer(mm, dtype=dtype, count=count, offset=off)
        variables[name] = Ct2Variable(name, shape, code, data)
        off += nbytes
    aliases: dict[str, str] = {}
    if off < size:
        for _ in range(take("<I")):
            alias = string()
            aliases[alias] = string()
    return Ct2Model(path, version, spec_name, revision, variables, aliases, mm)
