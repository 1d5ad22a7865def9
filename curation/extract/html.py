"""Is a payload HTML, and what is its text: content-type and sniffing, then charset decoding.

Charset order, as browsers do it: a byte-order mark, the HTTP header, a ``<meta>`` declaration in
the first 4 KB, then statistical detection (charset-normalizer). Legacy labels are widened to the
encoding browsers actually use for them (WHATWG Encoding Standard): gb2312 and gbk to gb18030,
latin-1 and ascii to windows-1252, and so on.
"""

from __future__ import annotations

import codecs
import re

_HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xhtml", "text/xhtml")
_SNIFF = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|title|meta|div|p\b|script|link|table|!--)", re.I | re.S)
_BINARY_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF", b"PK\x03\x04", b"\x1f\x8b", b"RIFF", b"\x00\x00\x01\x00")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_\-:.]+)""", re.I)

# WHATWG: labels whose real-world content is a superset encoding.
_WIDEN = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "gb_2312-80": "gb18030", "chinese": "gb18030",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252",
    "iso-8859-9": "cp1254", "tis-620": "cp874", "iso-8859-11": "cp874", "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949", "shift_jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "big5": "big5hkscs",
    "utf8": "utf-8", "unicode": "utf-8", "x-user-defined": "cp1252",
}


def is_html(content_type: str | None, body: bytes) -> bool:
    """HTML by declared type, confirmed by the bytes; or undeclared but sniffed as HTML."""
    head = body[:1024]
    if head.startswith(_BINARY_MAGIC) or b"\x00" in head[:512]:
        return False
    if content_type and content_type.startswith(_HTML_TYPES):
        return True
    if content_type and not content_type.startswith(("text/plain", "application/octet-stream", "unk", "text/unknown")):
        return False
    return bool(_SNIFF.match(head.lstrip(b"\xef\xbb\xbf")))


class Undecodable(ValueError):
    pass


def decode_html(body: bytes, header_charset: str | None) -> tuple[str, str]:
    """(text, charset used). Raises :class:`Undecodable` if no candidate decodes cleanly."""
    for bom, enc in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if body.startswith(bom):
            return body[len(bom) :].decode(enc, "replace"), enc
    candidates = []
    if header_charset:
        candidates.append(header_charset)
    m = _META_CHARSET.search(body[:4096])
    if m:
        candidates.append(m.group(1).decode("ascii", "ignore"))
    tried = set()
    for label in candidates:
        enc = _normalise(label)
        if not enc or enc in tried:
            continue
        tried.add(enc)
        try:
            return body.decode(enc), enc
        except UnicodeDecodeError:
            # Declared charsets are often slightly wrong (one bad byte); accept near-clean decodes.
            text = body.decode(enc, "replace")
            if text.count("\ufffd") <= max(2, len(text) // 1000):
                return text, enc
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(body[:65536]).best()
    if best is not None:
        enc = _normalise(best.encoding) or best.encoding
        text = body.decode(enc, "replace")
        if text.count("\ufffd") <= max(2, len(text) // 100):
            return text, enc
    raise Undecodable(f"no charset decodes this page (tried {sorted(tried) or 'none declared'}, utf-8, detection)")


def _normalise(label: str) -> str | None:
    label = label.strip().lower()
    label = _WIDEN.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def html_title(html: str) -> str | None:
    import html as _html

    m = _TITLE.search(html[:65536])
    if not m:
        return None
    title = " ".join(_html.unescape(m.group(1)).split())
    return title[:1000] or None
