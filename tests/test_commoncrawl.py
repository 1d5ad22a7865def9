"""Reading from Common Crawl over HTTP: a miniature crawl-data/ layout of real WARC files served
by a local HTTP server (tests/ccserver.py: Range requests, injected 403/429/5xx, cut and stalled
transfers). Listings (curation.sources.commoncrawl) and whole-file streams (storage.remote)."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tracemalloc
from pathlib import Path

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from ccserver import lay_out, serve
from curation.sources import commoncrawl as cc
from storage import remote
from storage.remote import RemoteFileError, open_remote
from tests.conftest import SAMPLE

DUMP = "CC-MAIN-2099-01"
# Real WARC files from data/sample, laid out as Common Crawl lays out a dump.
FILES = ["cc-main-2020-34-sample.warc.gz", "wget-2024-english-0.warc.gz", "heritrix-2008-archive-org.warc.gz"]
RELATIVE = [f"crawl-data/{DUMP}/segments/1700000000000.{i}/warc/{name}" for i, name in enumerate(FILES)]
FAST = dict(retries=3, backoff_s=0.01, timeout_s=5)


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc").resolve()
    assert lay_out(root, DUMP, [SAMPLE / "warc" / name for name in FILES]) == RELATIVE
    with serve(root) as server:
        yield server


@pytest.fixture
def server(crawl):
    crawl.reset()
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
    with pytest.raises(RemoteFileError, match=r"crawl-data/CC-MAIN-1999-01/warc\.paths\.gz: HTTP 404") as e:
        cc.warc_paths("CC-MAIN-1999-01", server.base_url, **FAST)
    assert e.value.status == 404


# ---------------------------------------------------------------------------------------------
# Streams


@pytest.mark.parametrize("chunk", [1 << 16, 7919])
def test_open_remote_streams_byte_identical_content(server, chunk):
    for rel in RELATIVE:
        with open_remote(server.base_url + rel, **FAST) as f:
            assert _read_in_chunks(f, chunk) == (server.root / rel).read_bytes()
            assert f.retry_count == 0
    assert [(m, r) for m, _, r in server.requests] == [("GET", None)] * len(RELATIVE)


def test_the_stream_is_a_standard_binary_file(server):
    rel = RELATIVE[1]
    expected = (server.root / rel).read_bytes()
    with io.BufferedReader(open_remote(server.base_url + rel, **FAST)) as f:  # readinto()
        assert f.readable() and not f.seekable()
        assert f.read(100) == expected[:100] and f.tell() == 100
        assert f.read() == expected[100:] and f.read(10) == b""
    with gzip.GzipFile(fileobj=open_remote(server.base_url + rel, **FAST)) as f:
        assert f.read() == gzip.decompress(expected)
    stream = open_remote(server.base_url + rel, **FAST)
    stream.close()
    with pytest.raises(ValueError):
        stream.read(10)


def test_fastwarc_iterates_records_over_the_stream(server):
    rel = RELATIVE[0]
    with open_remote(server.base_url + rel, **FAST) as f:
        remote = _responses(f)
    with open(server.root / rel, "rb") as f:
        local = _responses(f)
    assert len(remote) == 16 and remote == local


def test_a_503_on_open_is_retried(server, caplog):
    rel = RELATIVE[1]
    server.faults["/" + rel] = ["503", "429"]
    with caplog.at_level(logging.WARNING, logger="storage.remote"):
        with open_remote(server.base_url + rel, **FAST) as f:
            assert f.read() == (server.root / rel).read_bytes()
            assert f.retry_count == 2
    assert "retry 1/3 of " + server.base_url + rel in caplog.text
    assert "HTTP 503" in caplog.text and "HTTP 429" in caplog.text


def test_a_transfer_cut_mid_body_resumes_with_a_range_request(server):
    rel = RELATIVE[0]
    server.faults["/" + rel] = ["drop:50000"]
    with open_remote(server.base_url + rel, **FAST) as f:
        remote = _responses(f)  # FastWARC reads across the cut without noticing it
        assert f.retry_count == 1
    with open(server.root / rel, "rb") as f:
        assert remote == _responses(f)
    assert [r for _, _, r in server.requests] == [None, "bytes=50000-"]


def test_a_stalled_transfer_times_out_and_resumes(server):
    rel = RELATIVE[1]
    server.faults["/" + rel] = ["stall:1000"]
    with open_remote(server.base_url + rel, retries=2, backoff_s=0.01, timeout_s=0.3) as f:
        assert _read_in_chunks(f, 500) == (server.root / rel).read_bytes()
        assert f.retry_count == 1
    assert [r for _, _, r in server.requests] == [None, "bytes=1000-"]


def test_a_404_fails_at_once_naming_the_url(server):
    url = server.base_url + f"crawl-data/{DUMP}/segments/none/warc/missing.warc.gz"
    with pytest.raises(RemoteFileError, match="HTTP 404") as e:
        open_remote(url, **FAST)
    assert url in str(e.value) and e.value.status == 404
    assert len(server.requests) == 1


def test_a_403_mid_transfer_is_retried_and_resumes(server):
    # Common Crawl answers transient 403s while it sheds load: retried like a 503, then resumed.
    rel = RELATIVE[2]
    server.faults["/" + rel] = ["drop:20000", "403", "403"]
    with open_remote(server.base_url + rel, **FAST) as f:
        assert _read_in_chunks(f, 1 << 16) == (server.root / rel).read_bytes()
        assert f.retry_count == 3
    assert [r for _, _, r in server.requests] == [None, "bytes=20000-", "bytes=20000-", "bytes=20000-"]


def test_a_403_that_stays_fails_after_the_retries(server):
    rel = RELATIVE[2]
    server.faults["/" + rel] = ["403"] * 10
    with pytest.raises(RemoteFileError, match="gave up after 3 retries; last error: HTTP 403"):
        open_remote(server.base_url + rel, **FAST)
    assert len(server.requests) == 4


def test_it_gives_up_after_the_last_retry(server):
    rel = RELATIVE[1]
    server.faults["/" + rel] = ["503"] * 10
    with pytest.raises(RemoteFileError, match="gave up after 3 retries; last error: HTTP 503") as e:
        open_remote(server.base_url + rel, **FAST)
    assert server.base_url + rel in str(e.value)
    assert len(server.requests) == 4


def test_a_server_that_ignores_range_cannot_resume(server):
    rel = RELATIVE[2]
    server.faults["/" + rel] = ["drop:30000", "ignore-range"]
    with open_remote(server.base_url + rel, **FAST) as f:
        with pytest.raises(RemoteFileError, match="ignored the Range header"):
            _read_in_chunks(f, 1 << 16)


def test_streaming_holds_only_the_bytes_in_flight(server):
    rel = RELATIVE[2]  # 2.5 MB
    size = (server.root / rel).stat().st_size
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with open_remote(server.base_url + rel, **FAST) as f:
            while chunk := f.read(1 << 16):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256((server.root / rel).read_bytes()).digest()
    assert peak < size / 4, f"peak {peak} bytes while streaming a {size}-byte file"


def test_backoff_doubles_with_bounded_deterministic_jitter():
    url = "https://data.commoncrawl.org/x.warc.gz"
    delays = [remote.backoff_delay(url, k, 1.0) for k in range(5)]
    assert delays == [remote.backoff_delay(url, k, 1.0) for k in range(5)]
    for k, d in enumerate(delays):
        assert 2**k <= d <= 1.25 * 2**k
    assert len({d / 2**k for k, d in enumerate(delays)}) > 1  # jitter differs per attempt


def test_s3_urls_read_through_pyarrow(server, monkeypatch):
    # pyarrow's S3 client sent to the local server (path-style: /commoncrawl/<key>).
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.base_url.rstrip("/"))
    paths = cc.warc_paths(DUMP, "s3://commoncrawl/", first=1, count=1, **FAST)
    assert paths == ["s3://commoncrawl/" + RELATIVE[1]]
    with open_remote(paths[0], **FAST) as f:
        assert _read_in_chunks(f, 1 << 16) == (server.root / RELATIVE[1]).read_bytes()
    with pytest.raises(RemoteFileError, match="s3://commoncrawl/crawl-data/none.warc.gz: no such object"):
        open_remote("s3://commoncrawl/crawl-data/none.warc.gz", **FAST)


# ---------------------------------------------------------------------------------------------
# Command line


def test_cc_arguments_select_urls(server):
    from pipelines.cli import build_parser
    from pipelines.extract import resolve_inputs

    parser = build_parser()
    args = parser.parse_args(["extract", "--output", "x", "--cc-dump", DUMP, "--cc-base-url", server.base_url, "--cc-first", "1", "--cc-files", "2"])
    inputs, missing, cfg, selection = resolve_inputs(args.input, args.cc_dump, args.cc_base_url, args.cc_first, args.cc_files, args.cc_index)
    assert inputs == [server.base_url + r for r in RELATIVE[1:3]] and not missing and selection is None
    assert cfg.base_url == server.base_url
    assert resolve_inputs([], None) == ([], {}, None, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["extract", "--output", "x", "--cc-files", "-1"])
