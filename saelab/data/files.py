"""Activation files as a data source (``data.source = "file:<path>"``): users' own activations,
for example caches written by SAELens or TransformerLens, and saelab's own MiniLM cache.

Formats: ``.npy`` (float16/32/64), ``.safetensors`` (one tensor, or a named one with
``file:<path>#<name>``; float16/32/64 and bfloat16), ``.arrow`` (Arrow IPC, the format of Hugging
Face ``datasets``' ``save_to_disk`` and so of SAELens' CacheActivationsRunner: a column of
``Array2D(context_size, d_in)`` or of per-token ``d_in`` vectors, named with ``#<column>`` when the
file holds several float columns), a folder or a glob of such files (shards, rows concatenated in
sorted name order; a SAELens cache folder's ``data-0000N-of-0000M.arrow``), and ``.pt`` only
through ``torch.load(weights_only=True)``. Nothing is ever unpickled. Arrays must be 2-D
[rows, d_in] (an arrow column's token rows are flattened to that).

Bounded memory: only headers are parsed up front; rows are read on demand with positioned reads
(``readinto`` at a byte offset), never through a long-lived memory map, because every page a map
touches counts toward the process's resident set until it is unmapped. Streaming a 2 GB file
keeps one shuffle chunk resident (see benchmarks/stream_file.py for the measured peak).
"""

from __future__ import annotations

import glob
import json
import math
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saelab.config import RunConfig
from saelab.fileio import missing

if TYPE_CHECKING:  # torch is imported where a tensor is read or made: reading a .npy never needs it
    from torch import Tensor

SUFFIXES = (".npy", ".safetensors", ".pt", ".pth", ".arrow")
MAX_CHUNK_BYTES = 128 * 2**20  # float32 bytes of one shuffle chunk: caps data.shuffle_buffer for wide rows (43,690 at d_in 768)
_ST_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16"}


@dataclass(frozen=True)
class Segment:
    """One 2-D array in one file: ``rows`` x ``d_in`` values of ``dtype``, row-major, starting
    ``offset`` bytes into ``path`` (``tensor`` holds a .pt file's tensor instead)."""

    path: Path
    offset: int
    rows: int
    d_in: int
    dtype: str  # numpy dtype name, or "bfloat16" (read as uint16, widened by torch)
    tensor: Tensor | None = None

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, stop) as float32 [stop - start, d_in], written into ``out`` when given
        (float32 files are read straight into it: no second copy). torch only for a .pt tensor or bfloat16."""
        if out is None:
            out = np.empty((stop - start, self.d_in), dtype=np.float32)
        if self.tensor is not None:
            import torch
            out[...] = self.tensor[start:stop].to(torch.float32).numpy()
            return out
        storage = "uint16" if self.dtype == "bfloat16" else self.dtype
        buf = out if storage == "float32" else np.empty((stop - start, self.d_in), dtype=storage)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.d_in * buf.itemsize)
            got = f.readinto(memoryview(buf).cast("B"))
        if got != buf.nbytes:
            raise ValueError(f"{self.path}: truncated; rows {start}..{stop} need {buf.nbytes} bytes, read {got}")
        if self.dtype == "bfloat16":
            import torch
            out[...] = torch.from_numpy(buf.view(np.int16)).view(torch.bfloat16).to(torch.float32).numpy()
        elif buf is not out:
            out[...] = buf
        return out


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"activation file {path}: {problem}")


def _check_shape(path: Path, shape: tuple[int, ...], dtype: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise _fail(path, f"has shape {list(shape)} (rank {len(shape)}); activations must be 2-D [rows, d_in] (reshape to [-1, d_in])")
    rows, d_in = shape
    if rows == 0:
        raise _fail(path, f"is empty: shape {list(shape)} has no rows")
    if d_in == 0:
        raise _fail(path, f"has rows of width 0 (shape {list(shape)})")
    if dtype not in ("float16", "float32", "float64", "bfloat16"):
        raise _fail(path, f"has dtype {dtype}; activations must be floating point (float16/32/64, bfloat16)")
    return rows, d_in


def _check_size(path: Path, offset: int, nbytes: int, size: int) -> None:
    if offset + nbytes > size:
        raise _fail(path, f"is truncated: the header says the data ends at byte {offset + nbytes} but the file has {size} bytes")


def npy_segment(path: Path) -> Segment:
    """Parse a .npy header (never unpickles: object dtypes are refused)."""
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "is empty (0 bytes)")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:  # bad magic, a cut-off or malformed header
            raise _fail(path, f"is not a valid .npy file ({e})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise _fail(path, "holds Python objects; loading it would need unpickling, which saelab never does")
    if fortran and len(shape) == 2 and shape[0] > 1 and shape[1] > 1:
        raise _fail(path, "is stored in Fortran (column-major) order; save np.ascontiguousarray(x) instead")
    if dtype.byteorder == ">":
        raise _fail(path, "is big-endian; save x.astype(x.dtype.newbyteorder('<')) instead")
    rows, d_in = _check_shape(path, tuple(shape), dtype.name if dtype.kind == "f" else str(dtype))
    _check_size(path, offset, rows * d_in * dtype.itemsize, size)
    return Segment(path, offset, rows, d_in, dtype.name)


def safetensors_segment(path: Path, name: str | None = None) -> Segment:
    """Parse a safetensors header (an 8-byte little-endian length, then JSON giving each
    tensor's dtype, shape and byte range) and locate the tensor ``name`` (or the only one)."""
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _fail(path, f"is truncated: {size} bytes is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise _fail(path, f"is truncated or not safetensors: the header claims {n} bytes but the file has {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _fail(path, f"has a malformed safetensors header ({e})") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        raise _fail(path, "is empty: it holds no tensors")
    if name is None:
        if len(tensors) > 1:
            raise _fail(path, f"holds {len(tensors)} tensors {sorted(tensors)}; pick one with file:{path}#<name>")
        name = next(iter(tensors))
    if name not in tensors:
        raise _fail(path, f"has no tensor {name!r}; it holds {sorted(tensors)}")
    info = tensors[name]
    dtype = _ST_DTYPES.get(info["dtype"], info["dtype"])
    rows, d_in = _check_shape(path, tuple(info["shape"]), dtype)
    begin, end = info["data_offsets"]
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if end - begin != rows * d_in * itemsize:
        raise _fail(path, f"tensor {name!r}: byte range {begin}..{end} does not match shape {[rows, d_in]} of {dtype}")
    _check_size(path, 8 + n + begin, end - begin, size)
    return Segment(path, 8 + n + begin, rows, d_in, dtype)


def pt_segment(path: Path, name: str | None = None) -> Segment:
    """A .pt file through ``torch.load(weights_only=True, mmap=True)``: a tensor, or a dict of
    tensors (the named or the only one). Anything needing a full unpickler is refused."""
    import torch
    if path.stat().st_size == 0:
        raise _fail(path, "is empty (0 bytes)")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((ln.strip() for ln in str(e).splitlines() if ln.strip().startswith(("Unsupported", "WeightsUnpickler error: U"))), "")
        why = why.split(" Please use")[0]
        raise _fail(path, f"refused: it holds objects other than tensors and saelab only loads .pt with "
                          f"weights_only=True ({why or 'not a plain tensor file'}); save a tensor or use .safetensors") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise _fail(path, f"could not be read by torch.load(weights_only=True): {str(e).splitlines()[0]} (truncated or not a torch file?)") from None
    if isinstance(obj, dict):
        found = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if name is None and len(found) == 1:
            name = next(iter(found))
        if name not in found:
            raise _fail(path, f"pick one tensor with file:{path}#<name>; it holds {sorted(map(str, found))}")
        obj = found[name]
    if not isinstance(obj, torch.Tensor):
        raise _fail(path, f"holds a {type(obj).__name__}, not a tensor")
    dtype = str(obj.dtype).removeprefix("torch.")
    rows, d_in = _check_shape(path, tuple(obj.shape), dtype)
    return Segment(path, 0, rows, d_in, dtype, tensor=obj.contiguous())


def _float_leaf(t: Any) -> Any:
    """The float type at the bottom of a (nested) list type, or None."""
    import pyarrow as pa

    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return t if pa.types.is_floating(t) else None


def _flat_rows(path: Path, col: Any) -> tuple[Any, int]:
    """A (nested) list column as its flat float values and the innermost list length (d_in),
    checking that every list at every level has the same length and nothing is null: only then
    are the rows one contiguous [rows, d_in] block in the file."""
    import pyarrow as pa

    width = 0
    while not pa.types.is_floating(col.type):
        if col.null_count:
            raise _fail(path, f"column has {col.null_count} null entries; activations must be complete")
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
        else:
            offsets = np.asarray(col.offsets)
            lengths = np.diff(offsets)
            if len(lengths) and (lengths != lengths[0]).any():
                raise _fail(path, f"holds ragged rows (lengths {int(lengths.min())}..{int(lengths.max())}); "
                                  "every token row must have d_in values")
            width = int(lengths[0]) if len(lengths) else 0
        col = col.flatten()
    if col.null_count:
        raise _fail(path, f"column has {col.null_count} null values; activations must be complete")
    return col, width


def arrow_segments(path: Path, name: str | None = None) -> list[Segment]:
    """Locate the activations of an Arrow IPC file (stream or file format; uncompressed, as
    ``datasets.Dataset.save_to_disk`` writes them): one Segment per record batch, at the byte
    offset of its float values inside the file (found through a memory map that is closed again:
    only the offsets are read). The column is ``name``, or the only float column (a SAELens cache
    names it after the hook, e.g. ``blocks.8.hook_resid_pre``)."""
    import pyarrow as pa

    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "is empty (0 bytes)")
    segments: list[Segment] = []
    with pa.memory_map(str(path), "r") as mm:
        whole = mm.read_buffer(size)
        try:
            reader = pa.ipc.open_stream(whole)
            batches = list(reader)
        except pa.ArrowInvalid:
            try:
                f = pa.ipc.open_file(whole)
                batches = [f.get_batch(i) for i in range(f.num_record_batches)]
            except pa.ArrowInvalid as e:
                raise _fail(path, f"is not an Arrow IPC file ({e})") from None
        if not batches:
            raise _fail(path, "is empty: it holds no record batches")
        schema = batches[0].schema
        floats = [f.name for f in schema if _float_leaf(f.type) is not None]
        if name is None:
            if len(floats) != 1:
                raise _fail(path, f"holds {len(floats)} float columns {floats}; pick one with file:{path}#<column>")
            name = floats[0]
        if name not in schema.names:
            raise _fail(path, f"has no column {name!r}; it holds {schema.names}")
        if name not in floats:
            raise _fail(path, f"column {name!r} is {schema.field(name).type}, not (lists of) floats")
        for batch in batches:
            if batch.num_rows == 0:
                continue
            values, d_in = _flat_rows(path, batch.column(name))
            if d_in == 0:
                raise _fail(path, f"column {name!r} holds scalars, not rows of d_in values")
            dtype = np.dtype(values.type.to_pandas_dtype()).name
            itemsize = np.dtype(dtype).itemsize
            start = values.buffers()[1].address + values.offset * itemsize - whole.address
            if not 0 <= start <= size - len(values) * itemsize:  # a compressed file decompresses elsewhere
                raise _fail(path, "is compressed; save the dataset uncompressed (datasets' save_to_disk does)")
            rows, d_in = _check_shape(path, (len(values) // d_in, d_in), dtype)
            segments.append(Segment(path, start, rows, d_in, dtype))
        del batches, whole
    if not segments:
        raise _fail(path, "is empty: its record batches hold no rows")
    return segments


def open_segments(spec: str) -> list[Segment]:
    """Segments for ``<path>[#tensor]``: a file, a folder (its files with a known suffix) or a glob."""
    path_text, name = spec, None
    if "#" in spec and not Path(spec).expanduser().exists():
        path_text, name = spec.rsplit("#", 1)
    path = Path(path_text).expanduser()
    if any(c in path_text for c in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(str(path)))]
        if not paths:
            raise ValueError(f"activation files {path_text!r}: the pattern matches no file")
    elif path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not paths:
            raise ValueError(f"activation folder {path}: holds no {'/'.join(SUFFIXES)} files")
    elif path.is_file():
        paths = [path]
    else:
        raise ValueError(f"activation file {path}: {missing(path, 'no such file or folder')}")
    segments = []
    for p in paths:
        suffix = p.suffix.lower()
        if suffix == ".npy":
            if name is not None:
                raise _fail(p, f"a .npy file holds one array; drop '#{name}'")
            segments.append(npy_segment(p))
        elif suffix == ".safetensors":
            segments.append(safetensors_segment(p, name))
        elif suffix in (".pt", ".pth"):
            segments.append(pt_segment(p, name))
        elif suffix == ".arrow":
            segments += arrow_segments(p, name)
        else:
            raise _fail(p, f"has an unknown format {suffix or '(no suffix)'!r}; use one of {', '.join(SUFFIXES)}")
    widths = {s.d_in for s in segments}
    if len(widths) > 1:
        raise ValueError(f"activation files {path_text!r}: shards have different widths {sorted(widths)}")
    return segments


class FileSource:
    """Rows of one or more activation files, streamed with bounded memory.

    The last ``eval_rows`` rows are held out (``eval_set``); training uses the rest. Training
    rows are cut into chunks of ``chunk_rows`` consecutive rows (``data.shuffle_buffer``, capped
    at MAX_CHUNK_BYTES); epoch e visits the chunks in a permutation seeded by (seed, e) and the
    rows of each chunk in a permutation seeded by (seed, e, chunk). Batch ``step`` is positions
    [step*B, (step+1)*B) of that endless stream, so it is a pure function of (seed, step, B) and
    a resumed run gets exactly the batches it would have had. With ``order="ordered"``
    (``data.order``) both permutations are the identity: every epoch serves the training rows in
    file order, consecutive rows of one document staying together. Only the chunks a batch needs are
    read (one stays cached). The whole file is checked once up front (NaN/Inf rows refused, or
    skipped with ``skip_nonfinite``; constant rows refused); every chunk is checked again when read.
    With ``exclude_first`` > 0 (``data.exclude_first_positions``) the rows are consecutive
    sequences of ``sequence_rows`` rows (``data.context_length``) and the rows at the first
    ``exclude_first`` positions of each are never served, in training or held out, the way
    skipped NaN rows are not (``excluded_rows``, ``excluded_eval_rows`` count them).
    """

    ground_truth = None

    def __init__(self, segments: list[Segment], eval_rows: int, seed: int, shuffle_buffer: int,
                 label: str, info: dict | None = None, batch_size: int | None = None, skip_nonfinite: bool = False,
                 order: str = "shuffled", sequence_rows: int = 0, exclude_first: int = 0):
        if order not in ("shuffled", "ordered"):
            raise ValueError(f"data.order={order!r} is not allowed; choose one of ['shuffled', 'ordered']")
        self.segments, self.label, self.seed, self.info = segments, label, seed, dict(info or {})
        self.order = order
        self.d_in = segments[0].d_in
        self.file_rows = sum(s.rows for s in segments)
        self._starts = np.cumsum([0] + [s.rows for s in segments])
        # the whole file is checked before training (a NaN at row 150,000 must not crash a run
        # minutes in, and again on resume): streamed in blocks, so memory stays bounded
        nonfinite = self._scan(skip_nonfinite)  # sorted file rows with NaN/Inf (empty unless skip_nonfinite)
        self.sequence_rows, self.exclude_first = sequence_rows, exclude_first
        excluded = self._positions(sequence_rows, exclude_first)
        self._bad = np.union1d(nonfinite, excluded)  # sorted file rows never served
        self.skipped_rows = len(nonfinite)
        self._shift = self._bad - np.arange(len(self._bad))  # served row i is file row i + #(shift <= i)
        self.rows = self.file_rows - len(self._bad)
        if self.rows <= eval_rows:
            raise ValueError(f"{label}: {self.rows} rows is not more than eval_rows={eval_rows} (held out); use more data or fewer eval rows")
        self.eval_rows = eval_rows
        self.train_rows = self.rows - eval_rows
        if exclude_first:  # excluded rows among the file rows behind the training rows, and behind the held-out ones
            last_train = self.train_rows - 1 + int(np.searchsorted(self._shift, self.train_rows - 1, side="right"))
            self.excluded_rows = int(np.searchsorted(excluded, last_train, side="right"))
            self.excluded_eval_rows = len(excluded) - self.excluded_rows
        else:
            self.excluded_rows = self.excluded_eval_rows = 0
        if batch_size is not None and self.train_rows < batch_size:
            raise ValueError(f"data.batch_size={batch_size} is more than the {self.train_rows} training rows of {label} "
                             f"({self.rows} rows minus eval_rows={eval_rows}); use more data or a smaller batch")
        cap = max(1, MAX_CHUNK_BYTES // (4 * self.d_in))
        self.chunk_rows = min(shuffle_buffer, self.train_rows, cap)
        self.n_chunks = math.ceil(self.train_rows / self.chunk_rows)
        self._sizes = np.full(self.n_chunks, self.chunk_rows, dtype=np.int64)
        self._sizes[-1] = self.train_rows - (self.n_chunks - 1) * self.chunk_rows
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._perms: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def _scan(self, skip_nonfinite: bool) -> np.ndarray:
        """Read every row once, in blocks of at most MAX_CHUNK_BYTES: refuse the first NaN/Inf row
        by file and index (or, with ``skip_nonfinite``, return the indices of all such rows), and
        refuse a file whose rows are all equal (zero variance: nothing for an SAE to learn)."""
        block = max(1, MAX_CHUNK_BYTES // (4 * self.d_in))
        bad: list[np.ndarray] = []
        first: np.ndarray | None = None
        varies = False
        for lo in range(0, self.file_rows, block):
            x = self._read_file_rows(lo, min(lo + block, self.file_rows), check=False)
            ok = np.isfinite(x).all(axis=1)
            if not ok.all():
                if not skip_nonfinite:
                    path, row = self._locate(lo + int((~ok).argmax()))
                    raise _fail(path, f"row {row} contains NaN or Inf (set data.skip_nonfinite=true to train without "
                                      "such rows; they are counted in the run's events)")
                bad.append(lo + np.flatnonzero(~ok))
            if not varies and ok.any():
                good = x[ok]
                if first is None:
                    first = good[0].copy()
                varies = bool((good != first).any())
        if first is None:
            raise ValueError(f"{self.label}: every one of its {self.file_rows} rows contains NaN or Inf")
        if not varies:
            raise ValueError(f"{self.label}: every row is the same vector (zero variance); an SAE has nothing to learn "
                             "from constant rows")
        return np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)

    def _positions(self, sequence_rows: int, exclude_first: int) -> np.ndarray:
        """Sorted file rows at positions 0 .. exclude_first - 1 of each sequence of ``sequence_rows``
        consecutive rows (position = file row mod sequence_rows); empty when exclude_first is 0."""
        if not exclude_first:
            return np.empty(0, dtype=np.int64)
        if sequence_rows < 2:
            raise ValueError(f"{self.label}: data.exclude_first_positions={exclude_first} needs the rows' positions, but its "
                             "sequences differ in length")
        if exclude_first >= sequence_rows:
            raise ValueError(f"{self.label}: data.exclude_first_positions={exclude_first} would drop every row of its "
                             f"{sequence_rows}-row sequences")
        if self.file_rows % sequence_rows:
            raise ValueError(f"{self.label}: its {self.file_rows} rows are not whole sequences of data.context_length={sequence_rows} "
                             f"rows, so data.exclude_first_positions cannot tell a row's position; set data.context_length to "
                             f"the rows of one sequence in the file (a SAELens cache's context_size)")
        starts = np.arange(0, self.file_rows, sequence_rows, dtype=np.int64)
        return (starts[:, None] + np.arange(exclude_first, dtype=np.int64)).ravel()

    def _locate(self, row: int) -> tuple[Path, int]:
        i = int(np.searchsorted(self._starts, row, side="right")) - 1
        return self.segments[i].path, row - int(self._starts[i])

    def _read_file_rows(self, start: int, stop: int, check: bool = True) -> np.ndarray:
        """File rows [start, stop) as float32 (``check``: rejecting the first NaN/Inf row by file and index)."""
        x = np.empty((stop - start, self.d_in), dtype=np.float32)
        for seg, s0 in zip(self.segments, self._starts[:-1].tolist()):
            lo, hi = max(start, s0), min(stop, s0 + seg.rows)
            if lo < hi:
                seg.read(lo - s0, hi - s0, out=x[lo - start:hi - start])
        for i in range(0, len(x) if check else 0, 8192):  # in blocks: no chunk-sized temporary
            bad = ~np.isfinite(x[i:i + 8192]).all(axis=1)
            if bad.any():  # the scan passed, so the file changed since
                path, row = self._locate(start + i + int(bad.argmax()))
                raise _fail(path, f"row {row} contains NaN or Inf (first such row among rows read so far)")
        return x

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Served rows [start, stop) (file rows with the skipped ones taken out) as float32."""
        if not len(self._bad):
            return self._read_file_rows(start, stop)
        lo, hi = (i + int(np.searchsorted(self._shift, i, side="right")) for i in (start, stop - 1))
        x = self._read_file_rows(lo, hi + 1, check=False)
        keep = ~np.isin(np.arange(lo, hi + 1), self._bad)
        x = x[keep]
        if not np.isfinite(x).all():
            raise _fail(self.segments[0].path, "holds NaN or Inf rows it did not hold when it was checked (changed since?)")
        return x

    def _cached(self, store: OrderedDict, key, make, keep: int):
        if key in store:
            store.move_to_end(key)
            return store[key]
        while len(store) >= keep:  # drop before reading, so at most `keep` are ever resident
            store.popitem(last=False)
        store[key] = make()
        return store[key]

    def _chunk(self, c: int) -> np.ndarray:
        start = c * self.chunk_rows
        return self._cached(self._chunks, c, lambda: self._read(start, start + int(self._sizes[c])), keep=1)

    def _perm(self, *key: int) -> np.ndarray:
        """Chunk order of epoch key[0] (len(key) == 1) or row order inside chunk key[1]."""
        n = self.n_chunks if len(key) == 1 else int(self._sizes[key[1]])
        if self.order == "ordered":  # data.order: file order, no shuffling
            return self._cached(self._perms, key, lambda: np.arange(n), keep=8)
        return self._cached(self._perms, key, lambda: np.random.default_rng([self.seed, *key]).permutation(n), keep=8)

    def batch(self, step: int, batch_size: int) -> Tensor:
        """Training rows for ``step``: float32 [batch_size, d_in], a pure function of (seed, step)."""
        import torch
        pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
        epoch, offset = np.divmod(pos, self.train_rows)
        out = np.empty((batch_size, self.d_in), dtype=np.float32)
        for e in np.unique(epoch):
            where = np.flatnonzero(epoch == e)
            order = self._perm(int(e))
            ends = np.cumsum(self._sizes[order])
            k = np.searchsorted(ends, offset[where], side="right")  # position in this epoch's chunk order
            within = offset[where] - (ends[k] - self._sizes[order[k]])
            for kk in np.unique(k):
                c = int(order[kk])
                m = k == kk
                out[where[m]] = self._chunk(c)[self._perm(int(e), c)[within[m]]]
        return torch.from_numpy(out)

    def head(self, n_rows: int) -> np.ndarray:
        """The first ``n_rows`` file rows in file order, nothing skipped or excluded (so row i is at
        position i mod ``sequence_rows``): float32 [n_rows, d_in], NaN rows as they are."""
        return self._read_file_rows(0, min(n_rows, self.file_rows), check=False)

    def eval_set(self, n_rows: int) -> Tensor:
        """The last ``n_rows`` rows: float32 [n_rows, d_in], never in a training batch."""
        import torch
        if n_rows > self.eval_rows:
            raise ValueError(f"{self.label}: eval_set({n_rows}) asks for more than the {self.eval_rows} held-out rows (eval_rows)")
        return torch.from_numpy(self._read(self.rows - n_rows, self.rows))

    def describe(self) -> dict:
        files = [str(s.path) for s in self.segments]
        return {
            "name": "file", **self.info, "d_in": self.d_in, "rows": self.rows, "train_rows": self.train_rows,
            "eval_rows": self.eval_rows, "chunk_rows": self.chunk_rows, "order": self.order, "skipped_nonfinite_rows": self.skipped_rows,
            **({"exclude_first_positions": self.exclude_first, "sequence_rows": self.sequence_rows, "excluded_rows": self.excluded_rows,
                "excluded_eval_rows": self.excluded_eval_rows} if self.exclude_first else {}),
            "dtype": sorted({s.dtype for s in self.segments}),
            "files": files if len(files) <= 8 else files[:4] + [f"... {len(files)} files"],
        }


def check_width(cfg: RunConfig, d_in: int, what: str) -> None:
    """Reject an explicit ``sae.d_in`` that differs from the data's width."""
    if cfg.sae.d_in and cfg.sae.d_in != d_in:
        raise ValueError(f"sae.d_in={cfg.sae.d_in} but {what} has width d_in={d_in}; set sae.d_in={d_in} or 0 (take it from the source)")


def make_file_source(cfg: RunConfig) -> FileSource:
    """The source for ``data.source = "file:<path>[#tensor]"``."""
    spec = cfg.data.source.removeprefix("file:")
    segments = open_segments(spec)
    check_width(cfg, segments[0].d_in, f"activation file {spec}")
    return FileSource(segments, cfg.eval_rows, cfg.seed, cfg.data.shuffle_buffer, f"activation file {spec}",
                      info={"source": cfg.data.source}, batch_size=cfg.data.batch_size,
                      skip_nonfinite=cfg.data.skip_nonfinite, order=cfg.data.order,
                      sequence_rows=cfg.data.context_length, exclude_first=cfg.data.exclude_first_positions)
