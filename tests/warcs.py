"""WARC records built in memory, for the tests that feed the extractor pages of their own."""

from __future__ import annotations

import gzip


def warc_response(body: bytes, content_type: bytes) -> bytes:
    """One gzipped WARC response record of ``body`` served as ``content_type``."""
    http = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n\r\n" + body
    head = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://example.org/page\r\n"
            b"WARC-Date: 2024-05-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:12345678-1234-1234-1234-123456789abc>\r\n"
            b"Content-Type: application/http; msgtype=response\r\nContent-Length: " + str(len(http)).encode() + b"\r\n\r\n")
    return gzip.compress(head + http + b"\r\n\r\n", mtime=0)
