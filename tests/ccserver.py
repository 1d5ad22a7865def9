"""A real HTTP server on loopback that serves a folder as Common Crawl's endpoint does: byte
ranges, keep-alive, ETags, and faults injected on demand (tests and benchmarks).

``faults[path]`` holds one fault per coming request to that path, taken in order:

- ``"403"``, ``"429"``, ``"503"``: that status, no body (Common Crawl's transient denials and "Slow Down");
- ``"drop:N"``: the headers promise the whole body, N bytes come, then the connection closes (a cut transfer);
- ``"stall:N"``: the same, after a second of silence (a stalled transfer);
- ``"ignore-range"``: the whole file with HTTP 200 whatever the Range header asked.

A path-style S3 request (``/commoncrawl/<key>``) is served the same file, so pyarrow's S3 client
pointed at the server (``AWS_ENDPOINT_URL``) reads ``s3://commoncrawl/<key>`` from it.

    with serve(folder) as server:
        server.faults["/crawl-data/x.warc.gz"] = ["503", "drop:50000"]
        requests.get(server.base_url + "crawl-data/x.warc.gz")
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


class CrawlServer(ThreadingHTTPServer):
    """Serves ``root`` with byte ranges; ``faults`` and ``requests`` (method, path, Range header) as above."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = Path(root).resolve()
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.bytes_sent = 0
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client closing early is expected
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()
            self.bytes_sent = 0


def lay_out(root: Path, dump: str, files: list[Path]) -> list[str]:
    """Copy ``files`` into ``root`` as Common Crawl lays out a dump (one segment each) and write the
    dump's ``warc.paths.gz`` listing; their paths under ``root``, in listing order."""
    import gzip
    import shutil

    relative = [f"crawl-data/{dump}/segments/1700000000000.{i}/warc/{Path(f).name}" for i, f in enumerate(files)]
    for rel, f in zip(relative, files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / rel)
    with gzip.open(root / "crawl-data" / dump / "warc.paths.gz", "wt") as out:
        out.write("".join(r + "\n" for r in relative))
    return relative


@contextlib.contextmanager
def serve(root: Path) -> Iterator[CrawlServer]:
    """A :class:`CrawlServer` of ``root`` running in a thread, shut down on exit."""
    server = CrawlServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and Content-Length framing, as real endpoints
    server: CrawlServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.requests.append((self.command, path, self.headers.get("Range")))
            pending = self.server.faults.get(path, [])
            fault = pending.pop(0) if pending else None
        if fault in ("503", "429", "403"):
            return self._status(int(fault))
        rel = path.removeprefix("/commoncrawl").lstrip("/")
        file = (self.server.root / rel).resolve()
        if not file.is_relative_to(self.server.root) or not file.is_file():
            return self._status(404)
        size = file.stat().st_size
        start, end, status = 0, size - 1, 200
        asked = self.headers.get("Range")
        if asked and fault != "ignore-range":
            first, _, last = asked.removeprefix("bytes=").partition("-")
            start, end, status = int(first), min(int(last or size - 1), size - 1), 206
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"{size:x}-{file.stat().st_mtime_ns:x}"')
        self.send_header("Last-Modified", "Mon, 01 Jan 2099 00:00:00 GMT")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        left = end - start + 1
        if fault and fault.startswith(("drop:", "stall:")):
            left = min(left, int(fault.partition(":")[2]))
        with open(file, "rb") as f:  # streamed, so a memory test measures the client alone
            f.seek(start)
            while left > 0 and (chunk := f.read(min(left, 1 << 16))):
                self.wfile.write(chunk)
                left -= len(chunk)
                with self.server.lock:
                    self.server.bytes_sent += len(chunk)
        if fault and fault.startswith(("drop:", "stall:")):
            self.wfile.flush()
            if fault.startswith("stall:"):
                time.sleep(1.0)
            self.close_connection = True  # the rest of the promised body never comes

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


# ---------------------------------------------------------------------------------------------
# An index of WARC files, as Common Crawl's columnar index writes it


def index_table(files: list[tuple[Path, str]], relabel: dict[str, str | None] | None = None):
    """A columnar index (cc-index-table's column names) of the response records of ``files``,
    ``[(local WARC file, warc_filename the index gives it)]``.

    Offsets and lengths are FastWARC's (each record's position in the file and the distance to
    the next); the status and the server's MIME type come from the HTTP headers; the detected
    MIME type is text/html where the payload starts like HTML, else the server's; the languages
    are CLD2's (pycld2, as Common Crawl labels pages) on the payload, as ISO-639-3 codes, primary
    first. ``relabel`` {url: languages} overrides some labels (deliberately wrong ones)."""
    import pyarrow as pa
    from fastwarc.warc import ArchiveIterator

    rows: list[dict] = []
    for path, name in files:
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            recs = list(_responses(ArchiveIterator(f, parse_http=True)))
        # The distance to the next record of any kind: offsets of all records, then each response's end.
        with open(path, "rb") as f:
            starts = sorted(r.stream_pos for r in ArchiveIterator(f, parse_http=False)) + [size]
        ends = {s: e for s, e in zip(starts, starts[1:])}
        for pos, row in recs:
            row.update(warc_filename=name, warc_record_offset=pos, warc_record_length=ends[pos] - pos)
            if relabel and row["url"] in relabel:
                row["content_languages"] = relabel[row["url"]]
            rows.append(row)
    types = {"fetch_status": pa.int16(), "warc_record_offset": pa.int32(), "warc_record_length": pa.int32()}
    names = ["url_surtkey", "url", "url_host_name", "fetch_time", "fetch_status", "content_digest", "content_mime_type",
             "content_mime_detected", "content_charset", "content_languages", "warc_filename", "warc_record_offset",
             "warc_record_length"]
    return pa.table({n: pa.array([r[n] for r in rows], type=types.get(n, pa.string())) for n in names})


def _responses(records):
    from urllib.parse import urlsplit

    for rec in records:
        if str(rec.record_type) not in ("response", "WarcRecordType.response"):
            continue
        url = (rec.headers.get("WARC-Target-URI") or "").strip("<>")
        body = rec.reader.read()
        http = rec.http_headers
        mime = (rec.http_content_type or "").split(";")[0].strip().lower() or None
        head = body[:512].lstrip().lower()
        looks_html = head.startswith((b"<!doctype html", b"<html")) or b"<html" in head
        host = urlsplit(url).hostname or ""
        yield rec.stream_pos, {
            "url_surtkey": ",".join(reversed(host.split("."))) + ")" + (urlsplit(url).path or "/"),
            "url": url, "url_host_name": host, "fetch_time": rec.headers.get("WARC-Date"),
            "fetch_status": http.status_code if http is not None else None,
            "content_digest": rec.headers.get("WARC-Payload-Digest"), "content_mime_type": mime,
            "content_mime_detected": "text/html" if looks_html else mime, "content_charset": None,
            "content_languages": cld2_languages(body, rec.http_charset) if looks_html else None,
        }


def cld2_languages(payload: bytes, charset: str | None = None) -> str | None:
    """CLD2's languages of an HTML payload (up to three, primary first) as ISO-639-3 codes, as
    Common Crawl's index gives them: on the page converted to UTF-8 from its charset (the HTTP
    header's, else the page's own declaration or detection); None where CLD2 finds none."""
    import pycld2

    from curation.extract.html import Undecodable, decode_html
    from curation.sources.commoncrawl import iso639_3

    try:
        text = decode_html(payload, charset)[0].encode("utf-8", "replace")
    except Undecodable:
        text = payload.decode("utf-8", "replace").encode("utf-8")
    try:
        _, _, details = pycld2.detect(text, isPlainText=False)
    except pycld2.error:
        return None
    codes = []
    for _, code, percent, _ in details:
        if code != "un" and percent > 0 and iso639_3(code) not in codes:
            codes.append(iso639_3(code))
    return ",".join(codes) or None


def write_cdxj(table, path: Path) -> None:
    """The index as Common Crawl's CDXJ files hold it: `<surt> <timestamp> {json}` lines, gzipped."""
    import gzip
    import json

    with gzip.open(path, "wt") as f:
        for r in table.to_pylist():
            fields = {"url": r["url"], "mime": r["content_mime_type"], "mime-detected": r["content_mime_detected"],
                      "status": str(r["fetch_status"]), "digest": r["content_digest"], "length": str(r["warc_record_length"]),
                      "offset": str(r["warc_record_offset"]), "filename": r["warc_filename"]}
            if r["content_languages"]:
                fields["languages"] = r["content_languages"]
            stamp = "".join(c for c in (r["fetch_time"] or "") if c.isdigit())[:14]
            f.write(f"{r['url_surtkey']} {stamp} {json.dumps(fields)}\n")
