"""Reading straight from Common Crawl: the file listings of a dump, and WARC files as streams.

Common Crawl publishes each dump (``CC-MAIN-2024-22``, ...) under ``crawl-data/<dump>/``, with a
gzipped listing per file kind (``warc.paths.gz``, ``wet.paths.gz``, ``wat.paths.gz``), one path
relative to the bucket root per line. The same paths resolve over HTTPS
(``https://data.commoncrawl.org/``, the endpoint Common Crawl asks anonymous users to take) and
over S3 (``s3://commoncrawl/``, bucket in us-east-1). :func:`warc_paths` turns a dump and a
contiguous range of that listing into full URLs; :func:`open_remote` opens one as a forward-only
binary stream that FastWARC's ``ArchiveIterator`` reads directly.

A WARC file is ~1 GB and a transfer of that size from a busy public endpoint gets cut (the
endpoint answers 503 "Slow Down" under load). The HTTP stream therefore resumes where it was cut
with a ``Range`` request after an exponential back-off, instead of restarting the file. Only the
bytes in flight are held in memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import logging
import os
import re
import time
import zlib
from typing import BinaryIO, Callable

from storage import io as pio

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.commoncrawl.org/"
_S3_REGION = "us-east-1"  # the commoncrawl bucket's region (commoncrawl.org/get-started)
_CHUNK = 1 << 16
_KIND = re.compile(r"^[a-z0-9-]+$")


@dataclasses.dataclass
class CommonCrawlConfig:
    """Where Common Crawl is read from and how hard a cut transfer is retried.

    ``--cc-base-url`` overrides ``base_url`` (:func:`config_from_args`); a stage config may nest
    this dataclass to make the rest settable with ``--set``.
    """

    # Common Crawl's public HTTPS endpoint, recommended for access from outside AWS
    # (commoncrawl.org/get-started); ``s3://commoncrawl/`` from inside us-east-1; a local folder
    # holding ``crawl-data/`` for a mirror.
    base_url: str = DEFAULT_BASE_URL
    # Consecutive failed attempts (without a byte of progress in between) before giving up. With
    # 1 s doubling, 5 retries ride out 1+2+4+8+16 = 31 s (+ jitter) of an endpoint shedding load.
    retries: int = 5
    # First back-off; attempt k waits backoff_s * 2**k plus up to 25% deterministic jitter.
    backoff_s: float = 1.0
    # Seconds to connect and seconds without a byte before a read counts as failed (requests' timeout).
    timeout_s: float = 60.0


class RemoteFileError(OSError):
    """A remote file that could not be opened or read; the message names the URL."""

    def __init__(self, url: str, message: str, status: int | None = None):
        super().__init__(f"{url}: {message}")
        self.url = url
        self.status = status


# ---------------------------------------------------------------------------------------------
# Listings


def warc_paths(
    dump: str,
    base_url: str = DEFAULT_BASE_URL,
    first: int = 0,
    count: int | None = None,
    kind: str = "warc",
    *,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
) -> list[str]:
    """Full URLs of files ``first .. first+count-1`` of a dump's ``<kind>.paths.gz`` listing.

    The listing's order is Common Crawl's and fixed once a dump is published, so a range names
    the same files on every run. ``count=None`` takes the rest of the listing; a range running
    past the end is cut at the end. ``base_url`` is ``https://...``, ``http://...``,
    ``s3://commoncrawl/`` or a local folder holding ``crawl-data/``.
    """
    if not dump or "/" in dump:
        raise ValueError(f"dump must be a crawl name such as CC-MAIN-2024-22, not {dump!r}")
    if not _KIND.match(kind):
        raise ValueError(f"kind must be a listing name such as warc, wet or wat, not {kind!r}")
    if first < 0 or (count is not None and count < 0):
        raise ValueError(f"first ({first}) and count ({count}) must not be negative")
    listing = _join(base_url, f"crawl-data/{dump}/{kind}.paths.gz")
    with open_remote(listing, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s) as raw:
        with gzip.GzipFile(fileobj=raw) as text:
            paths = [line.strip() for line in text.read().decode("utf-8").splitlines() if line.strip()]
    if first >= len(paths):
        raise ValueError(f"{listing} lists {len(paths)} files; first={first} selects none")
    stop = len(paths) if count is None else min(len(paths), first + count)
    return [_join(base_url, p) for p in paths[first:stop]]


def _join(base: str, relative: str) -> str:
    if pio.is_uri(base):
        return base.rstrip("/") + "/" + relative.lstrip("/")
    return os.path.join(base, *relative.split("/"))


# ---------------------------------------------------------------------------------------------
# Streams


def open_remote(url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60) -> BinaryIO:
    """A read-only, forward-streaming binary file of ``url``'s bytes (never decompressed).

    ``http(s)://``: streamed with ``requests``; a connection error, timeout, 5xx or 429 (on open
    or mid-body) is retried after a back-off and resumes at the current byte offset with a
    ``Range`` request; another 4xx fails at once. Such a stream has ``retry_count``, the retries
    it has needed so far. ``s3://``: pyarrow's anonymous S3 filesystem (region us-east-1;
    ``AWS_ENDPOINT_URL`` points it at a mirror), opening retried the same way. Anything else: the
    file through :func:`storage.io.filesystem`. Failures raise :class:`RemoteFileError`, whose
    message names the URL. ``retries``, ``backoff_s``, ``timeout_s``: see :class:`CommonCrawlConfig`.
    """
    if url.startswith(("http://", "https://")):
        return _HTTPStream(url, retries, backoff_s, timeout_s)
    if url.startswith("s3://"):
        return _open_s3(url, retries, backoff_s, timeout_s)
    return pio.open_input(url)  # the bytes as stored: a WARC reader wants its per-record gzip members


def backoff_delay(url: str, attempt: int, backoff_s: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): doubling, plus up to 25% jitter.

    The jitter spreads the retries of many workers cut at the same moment; it is derived from the
    URL and the attempt, so one run's waits are reproducible.
    """
    jitter = (zlib.crc32(f"{url}#{attempt}".encode()) & 0xFFFF) / 0xFFFF * 0.25
    return backoff_s * (2**attempt) * (1.0 + jitter)


class _HTTPStream(io.RawIOBase):
    """GET with ``stream=True``; on a transient failure, reopen at the byte offset reached."""

    def __init__(self, url: str, retries: int, backoff_s: float, timeout_s: float):
        import requests

        super().__init__()
        self.url = url
        self.retry_count = 0
        self._retries = retries
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._session = requests.Session()
        self._resp = None
        self._offset = 0  # bytes handed to the reader so far
        self._size: int | None = None  # total size, from Content-Length / Content-Range
        self._etag: str | None = None
        self._failures = 0  # consecutive failed attempts without progress
        try:
            self._with_retries(self._open)
        except BaseException:
            self._session.close()
            raise

    # io.RawIOBase: readall(), readline() and the context manager build on these.
    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK * 16), b""))
        return self._read_some(size)

    def readinto(self, buffer) -> int:
        data = self._read_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _read_some(self, want: int) -> bytes:
        """Up to ``want`` bytes (fewer only at the end of the file), reopening a cut transfer."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if want == 0 or (self._size is not None and self._offset >= self._size):
            return b""
        while True:
            if self._resp is None:
                self._with_retries(self._open)
            try:
                data = self._resp.raw.read(want)
                if not data and self._size is not None and self._offset < self._size:
                    raise ConnectionError(f"connection closed at byte {self._offset} of {self._size}")
            except Exception as e:  # noqa: BLE001 - sorted into transient or not by _transient
                if not _transient(e):
                    raise RemoteFileError(self.url, f"read failed at byte {self._offset}: {e!r}") from e
                self._drop_response()
                self._failed(f"read cut at byte {self._offset}: {e!r}")
                continue
            self._offset += len(data)
            if data:
                self._failures = 0
            return data

    def tell(self) -> int:  # FastWARC's ArchiveIterator asks for it before the first read
        return self._offset

    def close(self) -> None:
        if not self.closed:
            self._drop_response()
            self._session.close()
        super().close()

    def _with_retries(self, attempt: Callable[[], None]) -> None:
        while True:
            try:
                return attempt()
            except _Retryable as e:
                self._failed(str(e), e.wait_s)

    def _failed(self, why: str, at_least_s: float = 0.0) -> None:
        """Count one failed attempt; wait, or give up naming the URL after the last retry."""
        if self._failures >= self._retries:
            raise RemoteFileError(self.url, f"gave up after {self._retries} retries; last error: {why}")
        # A server's Retry-After is honoured, up to a minute.
        delay = max(backoff_delay(self.url, self._failures, self._backoff_s), min(at_least_s, 60.0))
        self._failures += 1
        self.retry_count += 1
        log.warning("retry %d/%d of %s at byte %d in %.2f s: %s", self._failures, self._retries, self.url, self._offset, delay, why)
        time.sleep(delay)

    def _open(self) -> None:
        import requests

        # identity: the Range offsets are then offsets into the file's own bytes.
        headers = {"Accept-Encoding": "identity"}
        if self._offset:
            headers["Range"] = f"bytes={self._offset}-"
        try:
            resp = self._session.get(self.url, headers=headers, stream=True, timeout=self._timeout_s)
        except requests.RequestException as e:
            if _transient(e):
                raise _Retryable(f"request failed: {e!r}") from e
            raise RemoteFileError(self.url, f"request failed: {e!r}") from e
        status = resp.status_code
        if status == 429 or status >= 500:
            resp.close()
            raise _Retryable(f"HTTP {status} {resp.reason}", wait_s=_retry_after(resp))
        if status not in (200, 206):
            resp.close()
            raise RemoteFileError(self.url, f"HTTP {status} {resp.reason}", status=status)
        if self._offset:
            self._check_resume(resp)
        else:
            if status != 200:
                resp.close()
                raise RemoteFileError(self.url, f"expected HTTP 200 for the whole file, got {status}", status=status)
            length = resp.headers.get("Content-Length")
            self._size = int(length) if length and length.isdigit() else None
            self._etag = resp.headers.get("ETag")
        self._resp = resp

    def _check_resume(self, resp) -> None:
        """A resumed transfer must be the same file, from the byte where the last one was cut."""
        problem = None
        content_range = resp.headers.get("Content-Range", "")
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
        if resp.status_code != 206:
            problem = f"the server ignored the Range header (HTTP {resp.status_code}); cannot resume at byte {self._offset}"
        elif not m or int(m.group(1)) != self._offset:
            problem = f"asked for bytes from {self._offset}, got Content-Range {content_range!r}"
        elif self._etag and resp.headers.get("ETag") not in (None, self._etag):
            problem = f"the file changed while being read (ETag {self._etag} became {resp.headers.get('ETag')})"
        if problem:
            resp.close()
            raise RemoteFileError(self.url, problem, status=resp.status_code)
        if m.group(3) != "*":
            self._size = int(m.group(3))

    def _drop_response(self) -> None:
        if self._resp is not None:
            try:
                self._resp.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is discarded
                pass
            self._resp = None


class _Retryable(Exception):
    """A failed attempt worth repeating (connection, timeout, 5xx, 429)."""

    def __init__(self, message: str, wait_s: float = 0.0):
        super().__init__(message)
        self.wait_s = wait_s


def _transient(e: BaseException) -> bool:
    import requests
    import urllib3

    if isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    if isinstance(e, requests.RequestException):  # invalid URL, too many redirects, ...
        return False
    return isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError))


def _retry_after(resp) -> float:
    value = resp.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else 0.0


def _open_s3(url: str, retries: int, backoff_s: float, timeout_s: float) -> BinaryIO:
    import pyarrow.fs as pafs

    bucket_path = url[len("s3://") :]
    options = dict(
        anonymous=True,
        region=_S3_REGION,
        connect_timeout=timeout_s,
        request_timeout=timeout_s,
        # Reads inside the stream are retried by the AWS SDK itself with this budget.
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=retries + 1),
    )
    # The AWS SDKs' variable for an S3-compatible mirror (or a test server); pyarrow ignores it.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    s3 = pafs.S3FileSystem(**options)
    for attempt in range(retries + 1):
        try:
            # compression=None: the file's own bytes, as over HTTP (pyarrow would gunzip *.gz).
            return s3.open_input_stream(bucket_path, compression=None)
        except FileNotFoundError as e:
            raise RemoteFileError(url, f"no such object ({e})") from e
        except OSError as e:
            if attempt == retries:
                raise RemoteFileError(url, f"gave up after {retries} retries; last error: {e}") from e
            delay = backoff_delay(url, attempt, backoff_s)
            log.warning("retry %d/%d of %s in %.2f s: %s", attempt + 1, retries, url, delay, e)
            time.sleep(delay)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Command line


def add_cc_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cc-*`` options selecting files of a Common Crawl dump as a stage's input."""
    g = parser.add_argument_group(
        "Common Crawl input",
        "Read WARC files straight from Common Crawl instead of local files: --cc-dump names the "
        "crawl, --cc-first/--cc-files a contiguous range of its warc.paths.gz listing (the same "
        "files on every run).",
    )
    g.add_argument("--cc-dump", metavar="NAME", help="crawl to read, e.g. CC-MAIN-2024-22 (list: commoncrawl.org/overview); None: no Common Crawl input")
    g.add_argument(
        "--cc-base-url", metavar="URL", default=None,
        help="where crawl-data/ lives: https://data.commoncrawl.org/, s3://commoncrawl/ (from AWS us-east-1), "
        "or a local folder mirroring it; None: the config's base_url, https://data.commoncrawl.org/ by default",
    )
    g.add_argument("--cc-first", metavar="N", type=_non_negative, default=0, help="index of the first file in the listing (0-based)")
    g.add_argument(
        "--cc-files", metavar="N", type=_non_negative, default=None,
        help="number of files to read from --cc-first on; None: the rest of the listing (a whole dump is "
        "tens of thousands of ~1 GB files)",
    )


def config_from_args(args: argparse.Namespace, base: CommonCrawlConfig | None = None) -> CommonCrawlConfig:
    """The config with ``--cc-base-url`` applied over ``base`` (a stage config's section, or the defaults)."""
    cfg = base or CommonCrawlConfig()
    return dataclasses.replace(cfg, base_url=args.cc_base_url) if args.cc_base_url else cfg


def urls_from_args(args: argparse.Namespace, config: CommonCrawlConfig | None = None) -> list[str] | None:
    """The URLs the ``--cc-*`` options select, or None when no ``--cc-dump`` was given."""
    if not args.cc_dump:
        return None
    cfg = config_from_args(args, config)
    return warc_paths(
        args.cc_dump, cfg.base_url, args.cc_first, args.cc_files,
        retries=cfg.retries, backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s,
    )


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value
