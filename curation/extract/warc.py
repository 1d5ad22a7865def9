"""WARC, WET and ARC records as plain Python objects, read with FastWARC.

FastWARC parses per-record-gzipped and plain WARC streams in C, about 1.6x faster than warcio
(DESIGN.md; `make bench-extract` measures it here). ARC files, which FastWARC rejects, are read with
warcio's ARC-to-WARC conversion. The HTTP layer is parsed here, not by FastWARC, so a record whose
block was cut short (a truncated gzip member) is recognised by its length and counted, not parsed.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from fastwarc.warc import ArchiveIterator

# Record types the extractor looks at; the others are counted and skipped without reading them.
_WANTED = ("response", "conversion", "resource")


@dataclass
class Record:
    """One WARC record, HTTP layer split off for responses."""

    kind: str  # response, conversion, resource, request, metadata, warcinfo, revisit, ...
    record_id: str | None = None
    uri: str | None = None
    date: str | None = None
    digest: str | None = None
    content_type: str | None = None  # the payload's type (HTTP header, or WARC header)
    charset: str | None = None  # charset parameter of that content type
    status: int | None = None
    body: bytes = b""
    truncated: bool = False
    error: str | None = None  # set on a record that could not be parsed
    info: dict[str, str] = field(default_factory=dict)  # warcinfo fields


class NotAnArchive(ValueError):
    """The stream is not a WARC or ARC file at all."""


def iter_records(stream: BinaryIO) -> Iterator[Record]:
    """Every record of a WARC/WET/ARC stream, in order.

    A record that cannot be parsed ends the file (its framing is lost): it is yielded once with
    ``error`` set. A stream whose first record cannot be parsed raises :class:`NotAnArchive`.
    """
    head = stream.read(16 * 1024)
    if not head:
        raise NotAnArchive("empty file")
    probe = _peek_plain(head)
    if probe.startswith(b"filedesc://"):
        yield from _iter_arc(_Prepend(head, stream))
        return
    if not probe.startswith(b"WARC/"):
        raise NotAnArchive("not a WARC or ARC file (it does not start with a WARC/ version line)")
    yield from _iter_warc(_Prepend(head, stream))


def _iter_warc(stream: BinaryIO) -> Iterator[Record]:
    try:
        for rec in ArchiveIterator(stream, parse_http=False, auto_decode="none"):
            kind = str(rec.record_type)
            headers = rec.headers
            out = Record(
                kind=kind,
                record_id=headers.get("WARC-Record-ID"),
                uri=_clean_uri(headers.get("WARC-Target-URI")),
                date=headers.get("WARC-Date"),
                digest=headers.get("WARC-Payload-Digest") or headers.get("WARC-Block-Digest"),
            )
            if kind == "warcinfo":
                out.info = _parse_fields(rec.reader.read())
                out.info.setdefault("WARC-Filename", headers.get("WARC-Filename") or "")
            elif kind in _WANTED:
                block = rec.reader.read()
                out.truncated = len(block) < rec.content_length
                if kind == "response" and (headers.get("Content-Type") or "").startswith("application/http"):
                    _split_http(block, out)
                else:
                    out.content_type, out.charset = _parse_content_type(headers.get("Content-Type"))
                    out.body = block
            yield out
    except OSError as e:
        yield Record(kind="corrupt", error=str(e) or type(e).__name__)


def _iter_arc(stream: BinaryIO) -> Iterator[Record]:
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator
    from warcio.exceptions import ArchiveLoadFailed

    try:
        for rec in WarcioIterator(stream, arc2warc=True):
            h = rec.rec_headers
            out = Record(
                kind=rec.rec_type,
                record_id=h.get_header("WARC-Record-ID"),
                uri=_clean_uri(h.get_header("WARC-Target-URI")),
                date=h.get_header("WARC-Date"),
                digest=h.get_header("WARC-Payload-Digest"),
            )
            if rec.rec_type in _WANTED:
                if rec.http_headers is not None:
                    out.status = _int(rec.http_headers.get_statuscode())
                    out.content_type, out.charset = _parse_content_type(rec.http_headers.get_header("Content-Type"))
                out.body = rec.content_stream().read()
            else:
                rec.raw_stream.read()
            yield out
    except (ArchiveLoadFailed, OSError, ValueError) as e:
        yield Record(kind="corrupt", error=str(e) or type(e).__name__)


def _split_http(block: bytes, out: Record) -> None:
    """Split an HTTP response into status, headers and decoded body (chunked, gzip, deflate, br)."""
    sep = block.find(b"\r\n\r\n")
    sep_len = 4
    if sep < 0:
        sep, sep_len = block.find(b"\n\n"), 2
    if sep < 0:
        out.error = "no end of HTTP headers"
        return
    lines = block[:sep].decode("latin-1").splitlines()
    parts = lines[0].split(" ", 2) if lines else []
    out.status = _int(parts[1]) if len(parts) > 1 else None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name and not name[0].isspace():
            headers[name.strip().lower()] = value.strip()
    out.content_type, out.charset = _parse_content_type(headers.get("content-type"))
    body = block[sep + sep_len :]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").lower().strip()
    if encoding in ("gzip", "x-gzip", "deflate", "br"):
        body = _decompress(body, encoding)
    out.body = body


def _dechunk(body: bytes) -> bytes:
    """Chunked transfer decoding; a body that is not really chunked is returned as it is."""
    out, pos = bytearray(), 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return body if not out else bytes(out)
        size_text = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return body if not out else bytes(out)
        if size == 0:
            return bytes(out)
        out += body[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def _decompress(body: bytes, encoding: str) -> bytes:
    try:
        if encoding == "br":
            import brotli

            return brotli.decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
    except Exception:  # noqa: BLE001 - many servers label plain bodies as compressed
        return body


def _parse_content_type(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    parts = [p.strip() for p in value.split(";")]
    mime = parts[0].lower() or None
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            charset = v.strip().strip("\"'").lower()
    return mime, charset


def _parse_fields(block: bytes) -> dict[str, str]:
    fields = {}
    for line in block.decode("utf-8", "replace").splitlines():
        k, sep, v = line.partition(":")
        if sep:
            fields[k.strip()] = v.strip()
    return fields


def _clean_uri(uri: str | None) -> str | None:
    # wget writes target URIs as <...>; WARC 1.0 examples do too.
    if uri and uri.startswith("<") and uri.endswith(">"):
        return uri[1:-1]
    return uri


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _peek_plain(head: bytes) -> bytes:
    """The first bytes of the stream, gunzipped if it is gzip."""
    if head[:2] == b"\x1f\x8b":
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64)
        except zlib.error:
            return b""
    return head.lstrip()[:64]


class _Prepend(io.RawIOBase):
    """A stream with already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head, self._rest = head, rest
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        # FastWARC asks where the stream is; a forward-only stream knows that much.
        return self._pos

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._rest.read(len(b))
            n = len(data)
            b[:n] = data
        self._pos += n
        return n


__all__ = ["Record", "NotAnArchive", "iter_records", "gzip"]
