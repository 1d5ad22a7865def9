"""Reading from Common Crawl over HTTP: a miniature crawl-data/ layout of real WARC files served
by a local HTTP server (Range requests, injected 5xx/429, cut and stalled transfers)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import shutil
import sys
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from pipelines import commoncrawl as cc
from tests.conftest import SAMPLE

DUMP = "CC-MAIN-2099-01"
# Real WARC files from data/sample, laid out as Common Crawl lays out a dump.
FILES = ["cc-main-2020-34-sample.warc.gz", "wget-2024-english-0.warc.gz", "heritrix-2008-archive-org.warc.gz"]
RELATIVE = [f"crawl-data/{DUMP}/segments/1700000000000.{i}/warc/{name}" for i, name in enumerate(FILES)]
FAST = dict(retries=3, backoff_s=0.01, timeout_s=5)


class _CrawlServer(ThreadingHTTPServer):
    """Serves a folder with byte ranges; ``faults[path]`` holds one fault per coming request."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = root
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client closing early is expected
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and Content-Length framing, as real endpoints
    server: _CrawlServer

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
        # s3 path-style requests name the bucket first.
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
            left = int(fault.partition(":")[2])
        with open(file, "rb") as f:  # streamed, so the memory test measures the client alone
            f.seek(start)
            while left > 0 and (chunk := f.read(min(left, 1 << 16))):
                self.wfile.write(chunk)
                left -= len(chunk)
        if fault and fault.startswith(("drop:", "stall:")):
            self.wfile.flush()
            if fault.startswith("stall:"):
                time.sleep(1.0)
            self.close_connection = True  # the rest of the promised body never comes

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc").resolve()
    for rel, name in zip(RELATIVE, FILES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "warc" / name, root / rel)
    with gzip.open(root / "crawl-data" / DUMP / "warc.paths.gz", "wt") as f:
        f.write("".join(r + "\n" for r in RELATIVE))
    server = _CrawlServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(crawl):
    crawl.faults.clear()
    crawl.requests.clear()
    return crawl


def _read_in_chunks(stream, size: int) -> bytes:
    parts = []
    while chunk := stream.read(size):
        parts.append(chunk)
    return b"".join(parts)


def _responses(stream) -> list[tuple[str, str, bytes]]:
    return [
        (r.headers.get("WARC-Record-ID"), r.headers.get("WARC-Target-URI"), r.reader.read())
        for r in ArchiveIterator(stream, record_types=WarcRecordType.response)
    ]


# ---------------------------------------------------------------------------------------------
# Listings


def test_warc_paths_selects_a_contiguous_range_of_the_listing(server):
    base = server.base_url
    assert cc.warc_paths(DUMP, base) == [base + r for r in RELATIVE]
    assert cc.warc_paths(DUMP, base, first=1, count=1) == [base + RELATIVE[1]]
    assert cc.warc_paths(DUMP, base.rstrip("/"), first=1) == [base + r for r in RELATIVE[1:]]
    assert cc.warc_paths(DUMP, base, first=2, count=10) == [base + RELATIVE[2]]  # cut at the end
    with pytest.raises(ValueError, match="lists 3 files; first=3"):
        cc.warc_paths(DUMP, base, first=3)


def test_warc_paths_reads_a_local_mirror(server):
    paths = cc.warc_paths(DUMP, str(server.root), first=0, count=2)
    assert paths == [str(server.root / r) for r in RELATIVE[:2]]
    assert all(Path(p).is_file() for p in paths)


def test_warc_paths_of_an_unknown_dump_names_the_listing_url(server):
    with pytest.raises(cc.RemoteFileError, match=r"crawl-data/CC-MAIN-1999-01/warc\.paths\.gz: HTTP 404") as e:
        cc.warc_paths("CC-MAIN-1999-01", server.base_url, **FAST)
    assert e.value.status == 404


# ---------------------------------------------------------------------------------------------
# Streams


@pytest.mark.parametrize("chunk", [1 << 16, 7919])
def test_open_remote_streams_byte_identical_content(server, chunk):
    for rel in RELATIVE:
        with cc.open_remote(server.base_url + rel, **FAST) as f:
            assert _read_in_chunks(f, chunk) == (server.root / rel).read_bytes()
            assert f.retry_count == 0
    assert [(m, r) for m, _, r in server.requests] == [("GET", None)] * len(RELATIVE)


def test_the_stream_is_a_standard_binary_file(server):
    rel = RELATIVE[1]
    expected = (server.root / rel).read_bytes()
    with io.BufferedReader(cc.open_remote(server.base_url + rel, **FAST)) as f:  # readinto()
        assert f.readable() and not f.seekable()
        assert f.read(100) == expected[:100] and f.tell() == 100
        assert f.read() == expected[100:] and f.read(10) == b""
    with gzip.GzipFile(fileobj=cc.open_remote(server.base_url + rel, **FAST)) as f:
        assert f.read() == gzip.decompress(expected)
    stream = cc.open_remote(server.base_url + rel, **FAST)
    stream.close()
    with pytest.raises(ValueError):
        stream.read(10)


def test_fastwarc_iterates_records_over_the_stream(server):
    rel = RELATIVE[0]
    with cc.open_remote(server.base_url + rel, **FAST) as f:
        remote = _responses(f)
    with open(server.root / rel, "rb") as f:
        local = _responses(f)
    assert len(remote) == 16 and remote == local


def test_a_503_on_open_is_retried(server, caplog):
    rel = RELATIVE[1]
    server.faults["/" + rel] = ["503", "429"]
    with caplog.at_level(logging.WARNING, logger="pipelines.commoncrawl"):
        with cc.open_remote(server.base_url + rel, **FAST) as f:
            assert f.read() == (server.root / rel).read_bytes()
            assert f.retry_count == 2
    assert "retry 1/3 of " + server.base_url + rel in caplog.text
    assert "HTTP 503" in caplog.text and "HTTP 429" in caplog.text


def test_a_transfer_cut_mid_body_resumes_with_a_range_request(server):
    rel = RELATIVE[0]
    server.faults["/" + rel] = ["drop:50000"]
    with cc.open_remote(server.base_url + rel, **FAST) as f:
        remote = _responses(f)  # FastWARC reads across the cut without noticing it
        assert f.retry_count == 1
    with open(server.root / rel, "rb") as f:
        assert remote == _responses(f)
    assert [r for _, _, r in server.requests] == [None, "bytes=50000-"]


def test_a_stalled_transfer_times_out_and_resumes(server):
    rel = RELATIVE[1]
    server.faults["/" + rel] = ["stall:1000"]
    with cc.open_remote(server.base_url + rel, retries=2, backoff_s=0.01, timeout_s=0.3) as f:
        assert _read_in_chunks(f, 500) == (server.root / rel).read_bytes()
        assert f.retry_count == 1
    assert [r for _, _, r in server.requests] == [None, "bytes=1000-"]


def test_a_404_fails_at_once_naming_the_url(server):
    url = server.base_url + f"crawl-data/{DUMP}/segments/none/warc/missing.warc.gz"
    with pytest.raises(cc.RemoteFileError, match="HTTP 404") as e:
        cc.open_remote(url, **FAST)
    assert url in str(e.value) and e.value.status == 404
    assert len(server.requests) == 1


def test_a_403_mid_transfer_fails_at_once(server):
    rel = RELATIVE[2]
    server.faults["/" + rel] = ["drop:20000", "403"]
    with cc.open_remote(server.base_url + rel, **FAST) as f:
        with pytest.raises(cc.RemoteFileError, match="HTTP 403") as e:
            _read_in_chunks(f, 1 << 16)
    assert server.base_url + rel in str(e.value)
    assert len(server.requests) == 2


def test_it_gives_up_after_the_last_retry(server):
    rel = RELATIVE[1]
    server.faults["/" + rel] = ["503"] * 10
    with pytest.raises(cc.RemoteFileError, match="gave up after 3 retries; last error: HTTP 503") as e:
        cc.open_remote(server.base_url + rel, **FAST)
    assert server.base_url + rel in str(e.value)
    assert len(server.requests) == 4


def test_a_server_that_ignores_range_cannot_resume(server):
    rel = RELATIVE[2]
    server.faults["/" + rel] = ["drop:30000", "ignore-range"]
    with cc.open_remote(server.base_url + rel, **FAST) as f:
        with pytest.raises(cc.RemoteFileError, match="ignored the Range header"):
            _read_in_chunks(f, 1 << 16)


def test_streaming_holds_only_the_bytes_in_flight(server):
    rel = RELATIVE[2]  # 2.5 MB
    size = (server.root / rel).stat().st_size
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with cc.open_remote(server.base_url + rel, **FAST) as f:
            while chunk := f.read(1 << 16):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256((server.root / rel).read_bytes()).digest()
    assert peak < size / 4, f"peak {peak} bytes while streaming a {size}-byte file"


def test_backoff_doubles_with_bounded_deterministic_jitter():
    url = "https://data.commoncrawl.org/x.warc.gz"
    delays = [cc.backoff_delay(url, k, 1.0) for k in range(5)]
    assert delays == [cc.backoff_delay(url, k, 1.0) for k in range(5)]
    for k, d in enumerate(delays):
        assert 2**k <= d <= 1.25 * 2**k
    assert len({d / 2**k for k, d in enumerate(delays)}) > 1  # jitter differs per attempt


def test_s3_urls_read_through_pyarrow(server, monkeypatch):
    # pyarrow's S3 client sent to the local server (path-style: /commoncrawl/<key>).
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.base_url.rstrip("/"))
    paths = cc.warc_paths(DUMP, "s3://commoncrawl/", first=1, count=1, **FAST)
    assert paths == ["s3://commoncrawl/" + RELATIVE[1]]
    with cc.open_remote(paths[0], **FAST) as f:
        assert _read_in_chunks(f, 1 << 16) == (server.root / RELATIVE[1]).read_bytes()
    with pytest.raises(cc.RemoteFileError, match="s3://commoncrawl/crawl-data/none.warc.gz: no such object"):
        cc.open_remote("s3://commoncrawl/crawl-data/none.warc.gz", **FAST)


# ---------------------------------------------------------------------------------------------
# Command line


def test_cc_arguments_select_urls(server):
    parser = argparse.ArgumentParser()
    cc.add_cc_arguments(parser)
    help_text = parser.format_help()
    for option in ("--cc-dump NAME", "--cc-base-url URL", "--cc-first N", "--cc-files N"):
        assert option in help_text
    args = parser.parse_args(["--cc-dump", DUMP, "--cc-base-url", server.base_url, "--cc-first", "1", "--cc-files", "2"])
    fast = cc.CommonCrawlConfig(retries=1, backoff_s=0.01, timeout_s=5)
    assert cc.urls_from_args(args, fast) == [server.base_url + r for r in RELATIVE[1:3]]
    assert cc.config_from_args(args, fast).base_url == server.base_url
    from_config = cc.CommonCrawlConfig(base_url="s3://commoncrawl/")  # no --cc-base-url: the config's wins
    assert cc.config_from_args(parser.parse_args(["--cc-dump", DUMP]), from_config) == from_config
    assert cc.urls_from_args(parser.parse_args([])) is None
    assert cc.config_from_args(parser.parse_args([])).base_url == "https://data.commoncrawl.org/"
    with pytest.raises(SystemExit):
        parser.parse_args(["--cc-files", "-1"])
