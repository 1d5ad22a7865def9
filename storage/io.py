"""Files for every stage: resolving local paths and object-store URIs, expanding inputs, and the
one way to write an output so that it is complete or absent.

A shard is complete when its final name exists; a writer never leaves a partial file under that
name, so a re-run can skip complete outputs and redo the rest. On a local disk that is a
temporary name in the same folder, then a rename. Object stores (s3://, gs://, abfs://) have no
rename (a "move" is a copy and a delete), but an object appears only when its upload completes:
a single PUT or a completed multipart upload is all-or-nothing. There an output is written
straight to its final name, as one request, or as a multipart upload that is aborted on failure.

Output layout, the same for every stage (so that any Parquet reader takes a stage's output as it
is: ``datasets.load_dataset``, duckdb, polars, Spark, ``pyarrow.dataset``):

- the shards sit in a folder of their own, ``<output>/data/`` (:func:`data_folder`), with nothing
  else in it (dedup's ``<output>/documents/`` is the same rule under its older name);
- per-shard stats go to ``<output>/_stats/<shard>.json`` (:func:`shard_stats_path`), beside the
  data folder, never in it; ``stats.json``, manifests and caches stay in ``<output>/``;
- ``<output>/README.md`` is a dataset card whose ``configs`` point Hugging Face ``datasets`` at
  ``data/`` (:func:`write_dataset_card`), so ``load_dataset("<output>")`` works too;
- a shard without rows is written without row groups (:func:`write_parquet`): readers that size
  their batches by the first row group (HF datasets: "BatchSize must be greater than 0") skip it.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import posixpath
import uuid
from typing import Any, BinaryIO, Callable, Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.errors import MissingInput

PARQUET_COMPRESSION = "zstd"
ROW_GROUP_SIZE = 10_000
DATA_FOLDER = "data"

_URI_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "az://", "file://", "http://", "https://")


def is_uri(path: str) -> bool:
    return path.startswith(_URI_SCHEMES)


def is_object_store(path: str) -> bool:
    """An object store (s3://, gs://, abfs://, ...): no rename, no append, no folders."""
    return is_uri(path) and not path.startswith(("file://", "http://", "https://"))


def absolute(path: str) -> str:
    """A URI as it is, a local path made absolute (what a worker in another folder needs)."""
    return path if is_uri(path) else os.path.abspath(path)


def parent(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if is_uri(path) else os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_uri(path) else os.path.basename(path.rstrip(os.sep))


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an object-store URI."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), os.path.abspath(path)
    if path.startswith(("http://", "https://")):
        import fsspec

        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("https"))), path
    try:
        return pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_uri(base) else os.path.join(base, *parts)


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def open_input(path: str) -> BinaryIO:
    """The file's own bytes: no transparent gunzip (a .warc.gz keeps its per-record members). A
    file that is not there is a :class:`MissingInput` naming it (one line for the user)."""
    fs, p = filesystem(path)
    try:
        return fs.open_input_stream(p, compression=None)
    except FileNotFoundError:
        raise MissingInput(f"{path}: no such file; check the path") from None


def expand_inputs(specs: Iterable[str], suffixes: tuple[str, ...], missing_ok: bool = False) -> tuple[list[str], dict[str, str]]:
    """The one input discovery of every stage: files, globs and folders, as a sorted list of files.

    A file named as such is taken whatever its name. Folders are searched recursively for names
    ending in one of ``suffixes``; there, and among the matches of a pattern, a name starting with
    ``.`` or ``_`` (a temporary file, a stage's working folder such as ``_shuffle``, ``_stats``,
    ``_markers``) is skipped at any depth below the folder searched. A spec that yields nothing (no
    such path, no match, a folder without such files) is a user's mistake: a
    :class:`MissingInput` naming every such spec, before any work starts. ``missing_ok`` returns
    them as ``{spec: why}`` instead (a dry run lists them; a caller words its own message).
    """
    found: set[str] = set()
    missing: dict[str, str] = {}
    for spec in specs:
        fs, p = filesystem(spec)
        if any(c in spec for c in "*?["):
            if is_uri(spec):
                import fsspec

                ffs, inner = fsspec.core.url_to_fs(spec)
                scheme = spec.split("://", 1)[0]
                matches = [f"{scheme}://{m}" for m in ffs.glob(inner)]
                root = spec
            else:
                matches = _glob.glob(os.path.abspath(spec), recursive=True)
                root = os.path.abspath(spec)
            root = root[: min(root.index(c) for c in "*?[" if c in root)].rsplit("/", 1)[0]
            matches = [m for m in matches if not _skipped(m, root) and not _is_dir(m)]
            if not matches:
                missing[spec] = "no file matches this pattern"
            found.update(matches)
            continue
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            missing[spec] = "no such file or folder"
        elif info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(p, recursive=True)
            hits = [
                _rebuild(spec, p, i.path)
                for i in fs.get_file_info(selector)
                if i.type == pafs.FileType.File and i.path.endswith(suffixes) and not _skipped(i.path, p)
            ]
            if not hits:
                missing[spec] = f"folder holds no {'/'.join(suffixes)} files"
            found.update(hits)
        else:
            found.add(p if not is_uri(spec) else spec)
    if missing and not missing_ok:
        raise MissingInput("input not found: " + "; ".join(f"{spec} ({why})" for spec, why in sorted(missing.items()))
                           + f"; name files, folders or patterns holding {'/'.join(suffixes)} files")
    return sorted(found), missing


def _skipped(path: str, root: str) -> bool:
    """A name below ``root`` starting with ``.`` or ``_``: not an input (see :func:`expand_inputs`)."""
    rel = path[len(root.rstrip("/")) + 1 :] if path.startswith(root.rstrip("/") + "/") else posixpath.basename(path)
    return any(part.startswith((".", "_")) for part in rel.replace(os.sep, "/").split("/"))


def _is_dir(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def _rebuild(spec: str, root: str, found: str) -> str:
    """Give a path found under a URI folder its scheme back."""
    if not is_uri(spec):
        return found
    return spec.rstrip("/") + "/" + found[len(root.rstrip("/")) + 1 :]


def _tmp_name(path: str) -> str:
    head, tail = posixpath.split(path) if is_uri(path) else os.path.split(path)
    return join(head, f".{tail}.tmp-{uuid.uuid4().hex[:12]}")


def _commit(tmp: str, final: str) -> None:
    fs, t = filesystem(tmp)
    _, f = filesystem(final)
    fs.move(t, f)


def _fsspec(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def _put(data: bytes, path: str) -> None:
    """One object, in one request (or a multipart upload fsspec aborts on failure): it appears
    whole or not at all."""
    fs, inner = _fsspec(path)
    if not isinstance(data, (bytes, bytearray)):
        data = memoryview(data).tobytes()  # botocore sends bytes or files only (a pyarrow Buffer is neither)
    try:
        fs.pipe_file(inner, data)
    except OSError as e:
        raise _write_error(path, e) from e


def write_parquet(table: pa.Table, path: str, row_group_size: int = ROW_GROUP_SIZE) -> None:
    """Write a zstd Parquet file atomically: temporary name in the same folder, then rename; on an
    object store, the file is built in memory and put under its final name in one upload."""
    if is_object_store(path):
        sink = pa.BufferOutputStream()
        _parquet(table, sink, row_group_size)
        _put(sink.getvalue().to_pybytes(), path)
        return
    _write_local(path, lambda fs, tp: _parquet(table, tp, row_group_size, fs))


def _write_local(path: str, write: Callable[[pafs.FileSystem, str], None]) -> None:
    """``write(fs, temporary path)`` beside ``path``, then rename it to ``path``; a failure leaves
    neither, and an OSError names the final path."""
    fs, p = filesystem(path)
    fs.create_dir(posixpath.dirname(p) if is_uri(path) else os.path.dirname(p), recursive=True)
    tmp = _tmp_name(path)
    _, tp = filesystem(tmp)
    try:
        write(fs, tp)
        _commit(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise _write_error(path, e) from e
    except BaseException:
        _remove_quietly(tmp)
        raise


def _parquet(table: pa.Table, where: Any, row_group_size: int, fs: pafs.FileSystem | None = None) -> None:
    if table.num_rows:
        # Byte-identical outputs across runs: no wall-clock or host in the file.
        pq.write_table(table, where, filesystem=fs, compression=PARQUET_COMPRESSION, row_group_size=row_group_size,
                       write_statistics=True)
    else:
        # No rows: the schema (and its metadata) alone, no row group. pyarrow would write one
        # row group of 0 rows, which HF datasets turns into a batch size of 0 and fails on.
        pq.ParquetWriter(where, table.schema, filesystem=fs, compression=PARQUET_COMPRESSION).close()


class WriteError(OSError):
    """An output that could not be written (disk full, read-only, permissions); names the final
    path (not the temporary one) and keeps the errno of the cause."""

    def __str__(self) -> str:
        return str(self.strerror)


def _write_error(path: str, e: OSError) -> WriteError:
    reason = e.strerror or (str(e).rsplit("Detail: ", 1)[-1] if "Detail: " in str(e) else str(e))
    return WriteError(e.errno or 0, f"cannot write {path}: {reason}", path)


class ShardWriter:
    """Write a Parquet shard in row groups as batches arrive; it appears under its final name
    only when closed without error (temporary name, then rename; on an object store a multipart
    upload that completes on close and is aborted otherwise), so memory stays bounded and a
    crash never leaves a partial shard that looks complete."""

    def __init__(self, path: str, schema: pa.Schema, row_group_size: int = ROW_GROUP_SIZE):
        self.path, self.schema, self.row_group_size = path, schema, row_group_size
        self._upload = None  # the object-store upload (fsspec file), when writing to one
        self.tmp = None
        try:
            if is_object_store(path):
                ofs, inner = _fsspec(path)
                self._upload = ofs.open(inner, "wb")
                self._writer = pq.ParquetWriter(self._upload, schema, compression=PARQUET_COMPRESSION)
            else:
                self.fs, p = filesystem(path)
                self.fs.create_dir(os.path.dirname(p), recursive=True)
                self.tmp = _tmp_name(path)
                self._writer = pq.ParquetWriter(filesystem(self.tmp)[1], schema, filesystem=self.fs, compression=PARQUET_COMPRESSION)
        except OSError as e:
            raise _write_error(path, e) from e
        self._pending: list[dict] = []
        self.rows = 0

    def add(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            try:
                self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self.schema))
            except OSError as e:
                raise _write_error(self.path, e) from e
            self.rows += len(self._pending)
            self._pending = []

    def write_table(self, table: pa.Table) -> None:
        """Append a whole table as one row group (after the rows added so far)."""
        self._flush()
        try:
            self._writer.write_table(table)
        except OSError as e:
            raise _write_error(self.path, e) from e
        self.rows += table.num_rows

    def close(self) -> None:
        try:
            self._flush()
            self._writer.close()
            if self._upload is not None:
                self._upload.close()  # completes the upload: the object appears now
            else:
                _commit(self.tmp, self.path)
        except OSError as e:
            self._discard()
            raise e if isinstance(e, WriteError) else _write_error(self.path, e) from e

    def abort(self) -> None:
        if self._upload is not None:
            self._discard()
            return
        try:
            self._writer.close()
        except OSError:
            pass  # already failing: the temporary file goes either way
        finally:
            _remove_quietly(self.tmp)

    def _discard(self) -> None:
        if self._upload is None:
            _remove_quietly(self.tmp)
            return
        self._upload.discard()  # aborts the multipart upload: no object under the name
        for close in (self._writer.close, self._upload.close):
            try:  # both fail on the discarded upload; they must not complete it
                close()
            except (OSError, ValueError, AttributeError):
                pass

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_bytes(data: bytes | pa.Buffer, path: str) -> None:
    """Write a small file atomically (stats, manifests, markers, hand-off files); on an object
    store, one PUT. ``data`` is bytes or any buffer (a pyarrow Buffer is written without a copy
    to a local file)."""
    if is_object_store(path):
        _put(data, path)
        return
    def write(fs: pafs.FileSystem, tp: str) -> None:
        with fs.open_output_stream(tp) as f:
            f.write(data)

    _write_local(path, write)


def write_json(obj: Any, path: str) -> None:
    write_bytes((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), path)


def read_json(path: str) -> Any:
    with open_input(path) as f:
        return json.loads(f.read().decode("utf-8"))


def write_arrow(table: pa.Table, path: str) -> None:
    """An Arrow IPC file (zstd), written atomically: stage-internal tables read back whole."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    write_bytes(sink.getvalue().to_pybytes(), path)


def read_arrow(path: str) -> pa.Table:
    with open_input(path) as f:
        return pa.ipc.open_file(pa.py_buffer(f.read())).read_all()


def json_digest(obj: Any) -> str:
    """A short stable key for a JSON-able value (settings, inputs): is earlier work still valid?"""
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    fs, p = filesystem(path)
    try:
        return pq.read_table(p, filesystem=fs, columns=columns)
    except FileNotFoundError:
        raise MissingInput(f"{path}: no such file; check the path") from None


def data_folder(output: str) -> str:
    """The folder of a stage's shards: ``<output>/data`` (nothing but shards in it)."""
    return join(output, DATA_FOLDER)


def shard_stats_path(shard: str) -> str:
    """Where the stats of a shard ``<output>/<folder>/<name>.parquet`` go: ``<output>/_stats/<name>.json``,
    beside its data folder, so the data folder holds nothing but shards."""
    head, name = posixpath.split(shard) if is_uri(shard) else os.path.split(shard)
    parent = posixpath.dirname(head) if is_uri(shard) else os.path.dirname(head)
    return join(parent, "_stats", name.removesuffix(".parquet") + ".json")


def write_dataset_card(output: str, title: str, lines: Iterable[str] = ()) -> None:
    """``<output>/README.md``: a Hugging Face dataset card whose ``configs`` name ``data/*.parquet``
    as the data, so ``datasets.load_dataset("<output>")`` reads the shards and not the stats."""
    body = "\n".join(lines)
    card = (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        f"    path: {DATA_FOLDER}/*.parquet\n---\n# {title}\n\n"
        f"The shards are `{DATA_FOLDER}/*.parquet`; `stats.json` and the other files beside them are the stage's own.\n"
        + (f"\n{body}\n" if body else "")
    )
    write_bytes(card.encode("utf-8"), join(output, "README.md"))


def list_shards(folder: str, suffix: str = ".parquet") -> list[str]:
    """Complete shards under a folder, sorted by path (temporary files and working folders are
    skipped); [] when there are none."""
    return expand_inputs([folder], (suffix,), missing_ok=True)[0]


def makedirs(path: str) -> None:
    """A local folder (and its parents); nothing on an object store, whose folders are key prefixes."""
    if not is_object_store(path):
        fs, p = filesystem(path)
        fs.create_dir(p, recursive=True)


def listdir(path: str) -> list[str]:
    """Names directly under a folder or prefix, sorted; [] when it does not exist."""
    fs, p = filesystem(path)
    infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=False))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def file_sizes(folder: str) -> dict[str, int]:
    """{relative path: size} of every file under a folder or prefix (one listing on a store)."""
    fs, p = filesystem(folder)
    root = p.rstrip("/") + "/"
    infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=True))
    return {i.path[len(root):]: i.size for i in infos if i.type == pafs.FileType.File}


def remove_tree(path: str) -> None:
    """Delete a folder or every object under a prefix, if there."""
    fs, p = filesystem(path)
    try:
        if fs.get_file_info(p).type == pafs.FileType.Directory:
            fs.delete_dir(p)
    except FileNotFoundError:
        pass


class AppendLog:
    """A text log of lines (``log.jsonl``). On a local disk lines are appended and flushed as
    they come. An object store cannot append: the lines (those already there included) are kept
    and the whole object is put again by ``flush()``, at most every ``min_interval_s`` unless
    forced, so a long run does not rewrite its log on every line."""

    def __init__(self, path: str, min_interval_s: float = 10.0):
        self.path, self.min_interval_s = path, min_interval_s
        self._store = is_object_store(path)
        self._last = 0.0
        if self._store:
            self._lines: list[str] = []
            if exists(path):
                with open_input(path) as f:
                    self._lines = f.read().decode("utf-8").splitlines(keepends=True)
            self._dirty = False
        else:
            makedirs(parent(path))
            self._f = open(path, "a")

    def write(self, line: str) -> None:
        line = line if line.endswith("\n") else line + "\n"
        if self._store:
            self._lines.append(line)
            self._dirty = True
            self.flush(force=False)
        else:
            self._f.write(line)
            self._f.flush()

    def flush(self, force: bool = True) -> None:
        import time

        if not self._store or not self._dirty:
            return
        if force or time.monotonic() - self._last >= self.min_interval_s:
            write_bytes("".join(self._lines).encode("utf-8"), self.path)
            self._last, self._dirty = time.monotonic(), False

    def close(self) -> None:
        if self._store:
            self.flush()
        else:
            self._f.close()


def remove(path: str) -> None:
    """Delete a file if it is there (a stale output of a failed write)."""
    _remove_quietly(path)


def _remove_quietly(path: str) -> None:
    try:
        fs, p = filesystem(path)
        fs.delete_file(p)
    except OSError:
        pass
