"""``save`` / ``load`` of every layer (RNN, LSTM, GRU): config and weights in one .npz file,
and a file checked before it is read (zip directory, config keys/types/ranges, each member's
.npy header against the config) so that no pickle is ever loaded and a bad file is a
ValueError naming it.

The config names the cell (``"cell": "LSTM"``) except for the RNN, whose files have kept the
format of version 1 (``activation`` is its cell option); loading a file with another cell's
class is an error that names the right one."""

from __future__ import annotations

import json
import numbers
import os
import zipfile
import zlib

import numpy as np

from .. import _backends
from .._orchestration import aligned_copy

_FORMAT_VERSION = 1
_CONFIG_KEY = "__config__"


class _BadFile(Exception):
    """A file that is not one ``RNN.save`` writes (RNN.load turns it into a ValueError)."""


_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = dict(
    input_size=int,
    hidden_size=int,
    num_layers=int,
    bias=bool,
    bidirectional=bool,
    dropout=(int, float),
    time_major=bool,
    stateful=bool,
    dtype=str,
    seed=(int, type(None)),
    format_version=int,
)
_MAX_CONFIG_BYTES = 1 << 16  # the config save writes is ~300 bytes
_READ_CHUNK = 1 << 24


def _npy_header(m, name):
    """(shape, fortran_order, dtype) from the .npy header at the start of the stream m; it
    reads only the header (np.lib.format bounds its size)."""
    version = np.lib.format.read_magic(m)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(m)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(m)
    raise _BadFile(f"{name}: unsupported .npy format version {version}")


def _check_member(zf, info, shape, dtype_ok, expected):
    """(fortran_order, dtype, data offset) of a member whose .npy header has `shape` and a
    dtype that dtype_ok accepts, and whose size in the zip directory is header + data."""
    name = info.filename[:-4]
    # The directory's sizes bounded by the file's own, before anything is allocated from them:
    # a crafted directory declaring TBs made a MemoryError of the array below, not a bad file.
    # Deflate (np.savez_compressed) expands at most 1032:1.
    file_bytes = os.fstat(zf.fp.fileno()).st_size
    if info.compress_size > file_bytes or info.file_size > 1032 * info.compress_size + 1024:
        raise _BadFile(
            f"{name}: the zip directory declares {info.file_size} bytes ({info.compress_size} stored), "
            f"the file has {file_bytes}"
        )
    with zf.open(info) as m:
        got_shape, fortran, dtype = _npy_header(m, name)
        offset = m.tell()
    if dtype.hasobject or not dtype_ok(dtype):
        raise _BadFile(f"{name}: dtype {dtype}, expected {expected}")
    if got_shape != shape:
        raise _BadFile(f"{name}: shape {got_shape}, expected {shape}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size != offset + nbytes:
        raise _BadFile(f"{name}: {info.file_size - offset} bytes of data, its header declares {nbytes}")
    return fortran, dtype, offset


def _read_member(zf, info, shape, fortran, dtype, offset):
    """The data of a member checked by _check_member, read in chunks straight into the array."""
    a = np.empty(shape[::-1] if fortran else shape, dtype)  # C order; a Fortran array's transpose
    view = memoryview(a.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # ndarray has the buffer protocol
    with zf.open(info) as m:
        m.read(offset)
        for i in range(0, a.nbytes, _READ_CHUNK):
            if m.readinto(view[i : i + _READ_CHUNK]) != min(_READ_CHUNK, a.nbytes - i):
                raise _BadFile(f"{info.filename[:-4]}: truncated")
    return a.T if fortran else a


def _config_types(cls) -> dict:
    """The config keys and their types for layers of class ``cls``: the cell's options (str,
    RNN's activation) or, for the gated cells, the cell's name."""
    types = dict(_CONFIG_TYPES, **dict.fromkeys(cls._cell_options, str))
    return types if cls._name == "RNN" else dict(types, cell=str)


def _read_config(zf, info, cls) -> dict:
    if info.file_size > _MAX_CONFIG_BYTES:
        raise _BadFile(f"the config member declares {info.file_size} bytes")
    text = _read_member(zf, info, (), *_check_member(zf, info, (), lambda dt: dt.kind == "U", "a string"))
    try:
        config = json.loads(str(text[()]))
    except ValueError as e:
        raise _BadFile(f"the config is not JSON ({e})") from None
    if isinstance(config, dict):
        cell = config.get("cell", "RNN")
        if cell != cls._name and cell in ("RNN", "LSTM", "GRU"):
            raise _BadFile(f"it holds a {cell} layer: use pyrnn_fast.{cell}.load")
    types_of = _config_types(cls)
    if not isinstance(config, dict) or set(config) != set(types_of):
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise _BadFile(f"config keys {keys}, expected {sorted(types_of)}")
    for key, types in types_of.items():
        value = config[key]
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            raise _BadFile(f"config: {key} = {value!r} has the wrong type")
    if config.pop("format_version") != _FORMAT_VERSION:
        raise _BadFile(f"unsupported file format version (this version reads {_FORMAT_VERSION})")
    cell = config.pop("cell", cls._name)
    if cell != cls._name:
        raise _BadFile(f"config: cell = {cell!r}, expected {cls._name!r}")
    return config


def save(layer, path):
    """What ``RNN.save`` does (and LSTM's, GRU's)."""
    if isinstance(path, (bytes, os.PathLike)):
        # np.savez fails on bytes, also from a PathLike's __fspath__ ("endswith first arg must be bytes")
        path = os.fsdecode(path)
    elif not isinstance(path, str) and not hasattr(path, "write"):
        raise TypeError(f"path: expected a str, os.PathLike or a writable file object, got {type(path).__name__}")
    config = dict(
        layer._config(),
        format_version=_FORMAT_VERSION,
        seed=layer.seed if isinstance(layer.seed, numbers.Integral) else None,
    )
    if layer._name != "RNN":
        config["cell"] = layer._name
    # The parameters the configuration implies, checked: a file that load() would refuse (a
    # parameter rebound to another shape, an entry of the user's own in params) is refused here,
    # when it can still be mended, not found out when the checkpoint is needed.
    checked = layer._check_own_params("save() writes")
    names = list(checked)
    weights = {k: np.asarray(checked[k], dtype=layer.dtype) for k in names}
    # numpy's stub types **kwds as if they could be allow_pickle (a bool): arrays are what we pass
    np.savez(path, **{_CONFIG_KEY: np.array(json.dumps(config)), **weights})  # type: ignore[arg-type]


def load(cls, path, backend):
    """What ``RNN.load`` does: a ``cls`` layer (its ``_configure`` and ``_param_shapes``) from the file."""
    if not isinstance(path, (str, bytes, os.PathLike)):  # bytes too, as save takes them
        raise TypeError(f"path: expected a str, bytes or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(path)  # a str from here on (the errors below quote it)
    _backends.check_backend_name(backend)  # the caller's argument: its error is not the file's
    with open(path, "rb") as f:  # a missing file is the usual FileNotFoundError
        try:
            return _read(cls, f, backend)
        except _BadFile as e:
            raise ValueError(f"{path}: not a pyrnn_fast {cls._name} file: {e}") from None
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            zlib.error,
            EOFError,
            OSError,
            ValueError,
            KeyError,
            NotImplementedError,
            RuntimeError,
        ) as e:  # what zipfile and np.lib.format raise
            raise ValueError(
                f"{path}: not a pyrnn_fast {cls._name} file (corrupt or truncated: {type(e).__name__}: {e})"
            ) from None


def _read(cls, f, backend):
    """The layer in the open file f; a _BadFile unless the file is one ``save`` writes."""
    with zipfile.ZipFile(f) as zf:
        members = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.filename[:-4] in members:
                raise _BadFile(f"unexpected member {info.filename!r}")
            members[info.filename[:-4]] = info
        if _CONFIG_KEY not in members:
            raise _BadFile(f"no {_CONFIG_KEY} member")
        config = _read_config(zf, members.pop(_CONFIG_KEY), cls)
        layer = cls.__new__(cls)
        try:
            layer._configure(**config, backend=backend)
        except (TypeError, ValueError) as e:
            raise _BadFile(f"config: {e}") from None
        n_params = layer.num_layers * layer.num_directions * (len(layer._param_kinds) if layer.bias else 2)
        if len(members) != n_params:  # before listing the config's names, however many
            raise _BadFile(f"{len(members)} weight members, the config has {n_params} parameters")
        shapes = dict(layer._param_shapes())
        if set(members) != set(shapes):
            raise _BadFile(f"the weights {sorted(members)} do not match the config's {sorted(shapes)}")
        dtype = layer.dtype
        headers = {
            k: _check_member(
                zf, members[k], shapes[k], lambda dt: dt.newbyteorder("=") == dtype, f"{dtype} (the config's)"
            )
            for k in shapes
        }  # all before any data
        layer.params = {
            k: aligned_copy(np.asarray(_read_member(zf, members[k], shapes[k], *headers[k]), dtype)) for k in shapes
        }
    layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    return layer
