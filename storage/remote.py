"""Reading remote files that a busy public endpoint serves: whole-file streams that resume where
a transfer was cut, and byte ranges, both with bounded, deterministic retries.

A Common Crawl WARC file is ~1 GB and the endpoints shed load: HTTPS answers 503 "Slow Down",
429, and also transient 403s during access interruptions that clear minutes later (Marin's
focus-crawl runs saw thousands of those; marin-community/marin,
docs/debug-log-focus-crawl-warc-download.md). So every request here treats 403, 429, 5xx, a
connection error, a timeout and a cut transfer as transient: it waits (doubling, with a jitter
derived from the URL, so one run's waits are reproducible) and tries again, up to ``retries``
times without a byte of progress in between; then it fails with :class:`RemoteFileError`
naming the URL. Any other status (404, 400, 416 ...) fails at once.

- :func:`open_remote`: a forward-only binary stream of a whole file (FastWARC reads it directly).
  Over HTTP a cut transfer resumes at the byte reached with a ``Range`` request; only the bytes in
  flight are held in memory.
- :class:`RangeReader`: byte ranges of one file (HTTP ``Range`` requests on one kept-alive
  session, ranged S3 GETs, or reads of a local file). A range cut short is resumed from where it
  was cut; a file that ends before the range does is answered with the bytes there are.
- :func:`file_size`: a file's size (HEAD, or the store's metadata).

``http(s)://`` goes through ``requests``; ``s3://`` through pyarrow's S3 filesystem (region
us-east-1, Common Crawl's; ``AWS_ENDPOINT_URL[_S3]`` points it at a mirror or a test server;
anonymous unless AWS credentials are set in the environment); anything else through
:func:`storage.io.filesystem`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
import zlib
from typing import BinaryIO, Callable

from storage import io as pio

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
_S3_REGION = "us-east-1"  # the commoncrawl bucket's region (commoncrawl.org/get-started)
# A server's Retry-After is honoured up to this; our own back-off never waits longer either.
_MAX_WAIT_S = 60.0


class RemoteFileError(OSError):
    """A remote file that could not be opened or read; the message names the URL."""

    def __init__(self, url: str, message: str, status: int | None = None):
        super().__init__(f"{url}: {message}")
        self.url = url
        self.status = status


def backoff_delay(url: str, attempt: int, backoff_s: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): doubling, plus up to 25% jitter, at most a minute.

    The jitter spreads the retries of many workers cut at the same moment; it is derived from the
    URL and the attempt, so one run's waits are reproducible.
    """
    jitter = (zlib.crc32(f"{url}#{attempt}".encode()) & 0xFFFF) / 0xFFFF * 0.25
    return min(backoff_s * (2**attempt) * (1.0 + jitter), _MAX_WAIT_S)


def transient_status(status: int) -> bool:
    """HTTP statuses worth another try: 403 (Common Crawl's transient denials), 429 and 5xx."""
    return status in (403, 429) or status >= 500


class _Retryable(Exception):
    """A failed attempt worth repeating (connection, timeout, 403, 429, 5xx, a cut transfer)."""

    def __init__(self, message: str, wait_s: float = 0.0):
        super().__init__(message)
        self.wait_s = wait_s


class _Attempts:
    """Consecutive failed attempts at one URL, and the waits between them."""

    def __init__(self, url: str, retries: int, backoff_s: float):
        self.url, self.retries, self.backoff_s = url, retries, backoff_s
        self.failures = 0  # since the last progress
        self.total = 0  # retries over the object's life (the figure callers report)

    def failed(self, why: str, at_least_s: float = 0.0, where: str = "") -> None:
        """Count one failed attempt; wait, or give up naming the URL after the last retry."""
        if self.failures >= self.retries:
            raise RemoteFileError(self.url, f"gave up after {self.retries} retries; last error: {why}")
        delay = max(backoff_delay(self.url, self.failures, self.backoff_s), min(at_least_s, _MAX_WAIT_S))
        self.failures += 1
        self.total += 1
        log.warning("retry %d/%d of %s%s in %.2f s: %s", self.failures, self.retries, self.url, where, delay, why)
        time.sleep(delay)

    def run(self, attempt: Callable[[], object]):
        while True:
            try:
                return attempt()
            except _Retryable as e:
                self.failed(str(e), e.wait_s)


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


def _get(session, url: str, headers: dict, timeout_s: float, method: str = "GET"):
    """One request; a transient failure (connection, 403/429/5xx) raises :class:`_Retryable`."""
    import requests

    try:
        resp = session.request(method, url, headers=headers, stream=True, timeout=timeout_s)
    except requests.RequestException as e:
        if _transient(e):
            raise _Retryable(f"request failed: {e!r}") from e
        raise RemoteFileError(url, f"request failed: {e!r}") from e
    if transient_status(resp.status_code):
        resp.close()
        raise _Retryable(f"HTTP {resp.status_code} {resp.reason}", wait_s=_retry_after(resp))
    return resp


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


# ---------------------------------------------------------------------------------------------
# Whole files


def open_remote(url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60) -> BinaryIO:
    """A read-only, forward-streaming binary file of ``url``'s bytes (never decompressed).

    ``http(s)://``: streamed with ``requests``; a transient failure (on open or mid-body) is
    retried after a back-off and resumes at the current byte offset with a ``Range`` request.
    Such a stream has ``retry_count``, the retries it has needed so far. ``s3://``: pyarrow's S3
    filesystem, opening retried the same way (reads inside the stream are retried by the AWS SDK
    with the same budget). Anything else: the file through :func:`storage.io.filesystem`.
    Failures raise :class:`RemoteFileError`, whose message names the URL.
    """
    if url.startswith(("http://", "https://")):
        return _HTTPStream(url, retries, backoff_s, timeout_s)
    if url.startswith("s3://"):
        s3 = s3_filesystem(retries, timeout_s)
        # compression=None: the file's own bytes, as over HTTP (pyarrow would gunzip *.gz).
        return _s3_call(url, lambda p: s3.open_input_stream(p, compression=None), retries, backoff_s)
    return pio.open_input(url)  # the bytes as stored: a WARC reader wants its per-record gzip members


class _HTTPStream(io.RawIOBase):
    """GET with ``stream=True``; on a transient failure, reopen at the byte offset reached."""

    def __init__(self, url: str, retries: int, backoff_s: float, timeout_s: float):
        import requests

        super().__init__()
        self.url = url
        self._attempts = _Attempts(url, retries, backoff_s)
        self._timeout_s = timeout_s
        self._session = requests.Session()
        self._resp = None
        self._offset = 0  # bytes handed to the reader so far
        self._size: int | None = None  # total size, from Content-Length / Content-Range
        self._etag: str | None = None
        try:
            self._attempts.run(self._open)
        except BaseException:
            self._session.close()
            raise

    @property
    def retry_count(self) -> int:
        return self._attempts.total

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
                self._attempts.run(self._open)
            try:
                data = self._resp.raw.read(want)
                if not data and self._size is not None and self._offset < self._size:
                    raise ConnectionError(f"connection closed at byte {self._offset} of {self._size}")
            except Exception as e:  # noqa: BLE001 - sorted into transient or not by _transient
                if not _transient(e):
                    raise RemoteFileError(self.url, f"read failed at byte {self._offset}: {e!r}") from e
                self._drop_response()
                self._attempts.failed(f"read cut at byte {self._offset}: {e!r}", where=f" at byte {self._offset}")
                continue
            self._offset += len(data)
            if data:
                self._attempts.failures = 0
            return data

    def tell(self) -> int:  # FastWARC's ArchiveIterator asks for it before the first read
        return self._offset

    def close(self) -> None:
        if not self.closed:
            self._drop_response()
            self._session.close()
        super().close()

    def _open(self) -> None:
        # identity: the Range offsets are then offsets into the file's own bytes.
        headers = {"Accept-Encoding": "identity"}
        if self._offset:
            headers["Range"] = f"bytes={self._offset}-"
        resp = _get(self._session, self.url, headers, self._timeout_s)
        status = resp.status_code
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
        m = _CONTENT_RANGE.match(content_range)
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


# ---------------------------------------------------------------------------------------------
# Byte ranges


class RangeReader:
    """Byte ranges of one file: ``read(start, length)``, each request retried as above.

    ``requests``, ``retries`` and ``bytes_read`` count what it did (a task's stats report them).
    Over HTTP the ranges of one file share one kept-alive connection.
    """

    def __init__(self, url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60):
        self.url = url
        self.requests = 0
        self.bytes_read = 0
        self.size: int | None = None  # the file's size, once a response has told it
        self._attempts = _Attempts(url, retries, backoff_s)
        self._timeout_s = timeout_s
        self._session = None
        self._file = None  # a pyarrow random-access file (s3:// and everything not HTTP)
        self._etag: str | None = None

    @property
    def retries(self) -> int:
        return self._attempts.total

    def read(self, start: int, length: int) -> bytes:
        """Bytes ``start .. start+length-1``; fewer only where the file ends before them."""
        if length <= 0:
            return b""
        if self.url.startswith(("http://", "https://")):
            data = self._read_http(start, length)
        else:
            data = self._read_file(start, length)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_http(self, start: int, length: int) -> bytes:
        import requests

        if self._session is None:
            self._session = requests.Session()
        out = bytearray()
        self._attempts.failures = 0
        while len(out) < length:
            pos, end = start + len(out), start + length - 1
            if self.size is not None and pos >= self.size:
                break  # the file ends here
            self.requests += 1
            resp = self._attempts.run(lambda: _get(self._session, self.url, {"Accept-Encoding": "identity", "Range": f"bytes={pos}-{end}"}, self._timeout_s))
            try:
                if resp.status_code == 416:  # the range starts past the end of the file
                    m = re.match(r"bytes \*/(\d+)", resp.headers.get("Content-Range", ""))
                    self.size = int(m.group(1)) if m else pos
                    break
                self._check_range(resp, pos)
                want = min(end, self.size - 1 if self.size is not None else end) - pos + 1
                got = self._body(resp, out, want)
            finally:
                resp.close()
            if got < want:
                if got:
                    self._attempts.failures = 0  # progress: the budget is for attempts that bring nothing
                self._attempts.failed(f"range cut at byte {pos + got} of {start}-{end}", where=f" at byte {pos + got}")
            else:
                self._attempts.failures = 0
        return bytes(out)

    def _check_range(self, resp, pos: int) -> None:
        status = resp.status_code
        if status == 200:
            raise RemoteFileError(self.url, f"the server ignored the Range header (HTTP 200); cannot read bytes from {pos}", status=200)
        if status != 206:
            raise RemoteFileError(self.url, f"HTTP {status} {resp.reason}", status=status)
        content_range = resp.headers.get("Content-Range", "")
        m = _CONTENT_RANGE.match(content_range)
        if not m or int(m.group(1)) != pos:
            raise RemoteFileError(self.url, f"asked for bytes from {pos}, got Content-Range {content_range!r}", status=status)
        etag = resp.headers.get("ETag")
        if self._etag and etag and etag != self._etag:
            raise RemoteFileError(self.url, f"the file changed while being read (ETag {self._etag} became {etag})", status=status)
        self._etag = self._etag or etag
        if m.group(3) != "*":
            self.size = int(m.group(3))

    def _body(self, resp, out: bytearray, want: int) -> int:
        """Read up to ``want`` bytes of the body into ``out``; how many came before it ended or was cut."""
        got = 0
        try:
            while got < want:
                chunk = resp.raw.read(min(_CHUNK * 4, want - got))
                if not chunk:
                    break
                out += chunk
                got += len(chunk)
        except Exception as e:  # noqa: BLE001 - a cut body: kept up to the cut, the rest asked again
            if not _transient(e):
                raise RemoteFileError(self.url, f"read failed: {e!r}") from e
        return got

    def _read_file(self, start: int, length: int) -> bytes:
        if self._file is None:
            if self.url.startswith("s3://"):
                s3 = s3_filesystem(self._attempts.retries, self._timeout_s)
                self._file = _s3_call(self.url, s3.open_input_file, self._attempts.retries, self._attempts.backoff_s)
            else:
                fs, path = pio.filesystem(self.url)
                try:
                    self._file = fs.open_input_file(path)
                except FileNotFoundError as e:
                    raise RemoteFileError(self.url, f"no such file ({e})") from e
            self.size = self._file.size()
        if start >= self.size:
            return b""
        self.requests += 1
        attempt = 0
        while True:
            try:
                return self._file.read_at(min(length, self.size - start), start)
            except OSError as e:  # a ranged GET the SDK's own retries did not save
                if attempt >= self._attempts.retries:
                    raise RemoteFileError(self.url, f"gave up after {attempt} retries; last error: {e}") from e
                time.sleep(backoff_delay(self.url, attempt, self._attempts.backoff_s))
                attempt += 1
                self._attempts.total += 1


class RangedFile(io.RawIOBase):
    """A seekable read-only file over :class:`RangeReader` (a Parquet reader's random access to a
    remote file, every read retried as above)."""

    def __init__(self, url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60):
        super().__init__()
        self.reader = RangeReader(url, retries, backoff_s, timeout_s)
        self.size = file_size(url, retries, backoff_s, timeout_s)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        data = self.reader.read(self._pos, min(len(buffer), max(0, self.size - self._pos)))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.reader.close()
        super().close()


def file_size(url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60) -> int:
    """The size in bytes of ``url`` (HTTP HEAD, or the store's metadata), retried as above."""
    if url.startswith(("http://", "https://")):
        import requests

        with requests.Session() as session:
            resp = _Attempts(url, retries, backoff_s).run(lambda: _get(session, url, {"Accept-Encoding": "identity"}, timeout_s, "HEAD"))
            resp.close()
        length = resp.headers.get("Content-Length", "")
        if resp.status_code != 200 or not length.isdigit():
            raise RemoteFileError(url, f"HTTP {resp.status_code} {resp.reason} (no size)", status=resp.status_code)
        return int(length)
    if url.startswith("s3://"):
        s3 = s3_filesystem(retries, timeout_s)
        info = _s3_call(url, s3.get_file_info, retries, backoff_s)
    else:
        fs, path = pio.filesystem(url)
        info = fs.get_file_info(path)
    if info.size is None:
        raise RemoteFileError(url, "no such file")
    return info.size


# ---------------------------------------------------------------------------------------------
# S3


def s3_filesystem(retries: int = 5, timeout_s: float = 60):
    """pyarrow's S3 filesystem for Common Crawl's bucket (or a mirror at ``AWS_ENDPOINT_URL[_S3]``)."""
    import pyarrow.fs as pafs

    signed = any(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"))
    options = dict(
        anonymous=not signed,
        region=os.environ.get("AWS_DEFAULT_REGION") or _S3_REGION,
        connect_timeout=timeout_s,
        request_timeout=timeout_s,
        # Reads inside a stream are retried by the AWS SDK itself with this budget.
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=retries + 1),
    )
    # The AWS SDKs' variables for an S3-compatible mirror (or a test server); pyarrow ignores the second.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    return pafs.S3FileSystem(**options)


def _s3_call(url: str, call: Callable, retries: int, backoff_s: float):
    """``call(bucket/key)``, retried on errors other than a missing object."""
    bucket_path = url[len("s3://") :]
    for attempt in range(retries + 1):
        try:
            return call(bucket_path)
        except FileNotFoundError as e:
            raise RemoteFileError(url, f"no such object ({e})") from e
        except OSError as e:
            if attempt == retries:
                raise RemoteFileError(url, f"gave up after {retries} retries; last error: {e}") from e
            delay = backoff_delay(url, attempt, backoff_s)
            log.warning("retry %d/%d of %s in %.2f s: %s", attempt + 1, retries, url, delay, e)
            time.sleep(delay)
    raise AssertionError("unreachable")
