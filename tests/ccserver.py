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
