"""Common Crawl as a source: a dump's file listings, its index, and the records it selects, read
by byte ranges.

Common Crawl publishes each dump (``CC-MAIN-2024-22``, ...) under ``crawl-data/<dump>/`` with a
gzipped listing per file kind (``warc.paths.gz``, ...), one path relative to the bucket root per
line. The same paths resolve over HTTPS (``https://data.commoncrawl.org/``, the endpoint Common
Crawl asks users outside AWS to take), over S3 (``s3://commoncrawl/``, us-east-1) or in a local
mirror (:func:`warc_paths`, :func:`resolve`).

It also publishes an index of every record: the columnar index, Parquet files under
``cc-index/table/cc-main/warc/crawl=<dump>/subset=warc/`` with one row per record (``url``,
``fetch_status``, ``content_mime_detected``, ``content_languages`` - CLD2's languages as ISO-639-3
codes, primary first, e.g. ``eng,zho`` - ``warc_filename``, ``warc_record_offset``,
``warc_record_length`` ...), and the same facts as CDXJ lines (``<surt> <timestamp> {json}``,
keys ``url``, ``status``, ``mime-detected``, ``languages``, ``filename``, ``offset``,
``length``). :func:`read_index` selects the records worth extracting from either (status, detected
MIME type, languages, hosts: :class:`CCIndexConfig`) and groups them by WARC file;
:func:`coalesce` merges the byte ranges of one file into requests where the gap between two
records is small; :class:`IndexedWarc` fetches them (:class:`storage.remote.RangeReader`) and
yields each selected record exactly as reading the whole file would (:mod:`curation.extract.warc`
parses both), so the extractor treats them the same and gives the same documents.

A range that comes back short or does not parse as one WARC record is fetched again
(``range_retries``), then counted under ``range_short_read`` or ``range_unparsable``: never
dropped silently.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from storage import io as pio
from storage import remote
from storage.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.commoncrawl.org/"
_KIND = re.compile(r"^[a-z0-9-]+$")


@dataclass
class CommonCrawlConfig:
    """Where Common Crawl is read from and how hard a failed request is retried."""

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


def _filter_languages() -> list[str]:
    from curation.filter.config import LanguageConfig

    return list(LanguageConfig().keep)


@dataclass
class CCIndexConfig:
    """Which records of the index to read, and how their byte ranges are fetched."""

    # Records with any of these languages in the index's content_languages (CLD2, ISO-639-3).
    # Codes as the filter writes them (lid.176's: en, zh) or ISO-639-3 (eng, zho); the default is
    # the filter's own languages. Empty: no language rule.
    languages: list[str] = field(default_factory=_filter_languages)
    # Only the primary (first) language counts. CLD2 lists a page's languages by their share of
    # its text, and a page in another language often has English menus and attributes, so English
    # comes second in many labels: on the mixed-language crawl of `make bench-commoncrawl`
    # counting any position read 28% more pages (1.70x fewer bytes than the whole file instead of
    # 2.16x) and found no en/zh document the primary language missed (268 of 268 either way).
    primary_language_only: bool = True
    # Records the index gives no language (CLD2 undecided; dumps before CC-MAIN-2018-39): kept, so
    # the stage's own language id on the extracted text decides.
    unlabelled: bool = True
    # Detected MIME types (content_mime_detected) the extractor reads as HTML.
    mime_types: list[str] = field(default_factory=lambda: ["text/html", "application/xhtml+xml"])
    # HTTP statuses (fetch_status); the extractor keeps 200 and 203, Common Crawl's warc subset is 200.
    statuses: list[int] = field(default_factory=lambda: [200])
    # Host names; one keeps itself and its subdomains, so a suffix (edu, co.uk) keeps every host
    # under it. Empty: every host.
    hosts: list[str] = field(default_factory=list)
    # Two selected records of one WARC file are fetched in one request when at most this many
    # bytes lie between them (fetched and skipped). `make bench-commoncrawl` prints bytes and
    # requests per gap: 4 KiB spans the request and metadata records between neighbouring
    # responses and halves the requests (314 -> 167) for 1% more bytes; 16 KiB saves 12% more
    # requests for 3% more bytes; 64 KiB fetches 28% more bytes, and 1 MiB the whole file.
    gap: int = 4096
    # One request fetches at most this many bytes (a record larger than it is fetched alone):
    # the memory a task holds per request in flight.
    max_request_bytes: int = 16 << 20
    # Requests fetched ahead while the extractor works on the current one (threads: the network
    # waits overlap the CPU work; memory up to (prefetch + 1) * max_request_bytes).
    prefetch: int = 2
    # A record's range that comes back short or does not parse is fetched again this many times,
    # then counted (range_short_read, range_unparsable).
    range_retries: int = 1
    # Bytes read from a file's start for its warcinfo record (the dump name for documents), when
    # no --dump is given; merged into the first request when close enough.
    warcinfo_bytes: int = 16384


# ---------------------------------------------------------------------------------------------
# Listings


def resolve(base: str, relative: str) -> str:
    """``relative`` (a path under the bucket root, as listings and the index give it) under
    ``base`` (a URL or a local folder); an absolute URL or path is returned as it is."""
    if pio.is_uri(relative) or os.path.isabs(relative):
        return relative
    if pio.is_uri(base):
        return base.rstrip("/") + "/" + relative.lstrip("/")
    return os.path.join(base, *relative.split("/"))


def listing(dump: str, base_url: str = DEFAULT_BASE_URL, first: int = 0, count: int | None = None, kind: str = "warc",
            *, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60.0) -> list[str]:
    """Files ``first .. first+count-1`` of a dump's ``<kind>.paths.gz`` listing, as it names them
    (paths under the bucket root, as the index's ``warc_filename`` does).

    The listing's order is Common Crawl's and fixed once a dump is published, so a range names
    the same files on every run. ``count=None`` takes the rest of the listing; a range running
    past the end is cut at the end.
    """
    if not dump or "/" in dump:
        raise ValueError(f"dump must be a crawl name such as CC-MAIN-2024-22, not {dump!r}")
    if not _KIND.match(kind):
        raise ValueError(f"kind must be a listing name such as warc, wet or wat, not {kind!r}")
    if first < 0 or (count is not None and count < 0):
        raise ValueError(f"first ({first}) and count ({count}) must not be negative")
    url = listing_url(dump, base_url, kind)
    with remote.open_remote(url, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s) as raw:
        with gzip.GzipFile(fileobj=raw) as text:
            paths = [line.strip() for line in text.read().decode("utf-8").splitlines() if line.strip()]
    if first >= len(paths):
        raise ValueError(f"{url} lists {len(paths)} files; first={first} selects none")
    stop = len(paths) if count is None else min(len(paths), first + count)
    return paths[first:stop]


def warc_paths(dump: str, base_url: str = DEFAULT_BASE_URL, *args, **kwargs) -> list[str]:
    """Full URLs (or local paths, for a mirror) under ``base_url`` of :func:`listing`'s files
    (same arguments)."""
    return [resolve(base_url, p) for p in listing(dump, base_url, *args, **kwargs)]


def listing_url(dump: str, base_url: str = DEFAULT_BASE_URL, kind: str = "warc") -> str:
    return resolve(base_url, f"crawl-data/{dump}/{kind}.paths.gz")


# ---------------------------------------------------------------------------------------------
# Languages: the filter's codes (lid.176: ISO 639-1 where there is one) as the index's (ISO-639-3)

_ISO639_1_TO_3 = dict(pair.split(":") for pair in """
aa:aar ab:abk ae:ave af:afr ak:aka am:amh an:arg ar:ara as:asm av:ava ay:aym az:aze ba:bak be:bel
bg:bul bi:bis bm:bam bn:ben bo:bod br:bre bs:bos ca:cat ce:che ch:cha co:cos cr:cre cs:ces cu:chu
cv:chv cy:cym da:dan de:deu dv:div dz:dzo ee:ewe el:ell en:eng eo:epo es:spa et:est eu:eus fa:fas
ff:ful fi:fin fj:fij fo:fao fr:fra fy:fry ga:gle gd:gla gl:glg gn:grn gu:guj gv:glv ha:hau he:heb
hi:hin ho:hmo hr:hrv ht:hat hu:hun hy:hye hz:her ia:ina id:ind ie:ile ig:ibo ii:iii ik:ipk io:ido
is:isl it:ita iu:iku ja:jpn jv:jav ka:kat kg:kon ki:kik kj:kua kk:kaz kl:kal km:khm kn:kan ko:kor
kr:kau ks:kas ku:kur kv:kom kw:cor ky:kir la:lat lb:ltz lg:lug li:lim ln:lin lo:lao lt:lit lu:lub
lv:lav mg:mlg mh:mah mi:mri mk:mkd ml:mal mn:mon mr:mar ms:msa mt:mlt my:mya na:nau nb:nob nd:nde
ne:nep ng:ndo nl:nld nn:nno no:nor nr:nbl nv:nav ny:nya oc:oci oj:oji om:orm or:ori os:oss pa:pan
pi:pli pl:pol ps:pus pt:por qu:que rm:roh rn:run ro:ron ru:rus rw:kin sa:san sc:srd sd:snd se:sme
sg:sag si:sin sk:slk sl:slv sm:smo sn:sna so:som sq:sqi sr:srp ss:ssw st:sot su:sun sv:swe sw:swa
ta:tam te:tel tg:tgk th:tha ti:tir tk:tuk tl:tgl tn:tsn to:ton tr:tur ts:tso tt:tat tw:twi ty:tah
ug:uig uk:ukr ur:urd uz:uzb ve:ven vi:vie vo:vol wa:wln wo:wol xh:xho yi:yid yo:yor za:zha zh:zho
zu:zul
""".split())


def iso639_3(code: str) -> str:
    """A language code as the index writes it: ``en`` -> ``eng``, ``zh-Hant`` -> ``zho``; a
    three-letter code as it is."""
    base = code.strip().lower().replace("_", "-").split("-", 1)[0]
    return _ISO639_1_TO_3.get(base, base)


# ---------------------------------------------------------------------------------------------
# The index

# The columnar index's names (cc-index-table's schema); a CDXJ line's keys map onto them.
COLUMNS = ("url", "fetch_status", "content_mime_detected", "content_languages", "warc_filename",
           "warc_record_offset", "warc_record_length")
_CDXJ_KEYS = {"url": "url", "status": "fetch_status", "mime-detected": "content_mime_detected",
              "languages": "content_languages", "filename": "warc_filename", "offset": "warc_record_offset",
              "length": "warc_record_length"}
INDEX_SUFFIXES = (".parquet", ".cdx", ".cdxj", ".gz")


class IndexUnreadable(UserError):
    """An index file that is neither the columnar index nor CDXJ, or lacks a column the selection needs."""


class NothingSelected(UserError):
    """A selection that matches no record of the index."""


@dataclass
class Selection:
    """The records an index selects, grouped by WARC file (``warc_filename`` as the index gives
    it), each file's (offset, length) pairs sorted by offset; and what was not selected, by reason."""

    files: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    index_files: int = 0
    rows: int = 0
    not_selected: Counter = field(default_factory=Counter)
    # CDXJ lines that could not be parsed (skipped, counted).
    bad_lines: int = 0

    @property
    def records(self) -> int:
        return sum(len(r) for r in self.files.values())

    @property
    def record_bytes(self) -> int:
        return sum(n for r in self.files.values() for _, n in r)


def read_index(specs: list[str], cfg: CCIndexConfig, warc_files: Iterable[str] | None = None,
               retries: int = 5, backoff_s: float = 1.0) -> Selection:
    """The records of the index files ``specs`` (files, globs, folders; local or object-store
    URIs; files over HTTP(S)) that ``cfg`` selects; with ``warc_files``, only rows of those WARC files (paths as the
    index names them). An index file that cannot be read raises :class:`IndexUnreadable`;
    reads that fail on the way (an endpoint shedding load) are retried like any other request."""
    urls = [s for s in specs if s.startswith(("http://", "https://"))]  # files: HTTP lists no folders
    files, missing = pio.expand_inputs([s for s in specs if s not in urls], INDEX_SUFFIXES)
    files += urls
    if missing:
        spec, why = next(iter(sorted(missing.items())))
        raise IndexUnreadable(f"--cc-index {spec}: {why}")
    wanted = set(warc_files) if warc_files is not None else None
    sel = Selection(index_files=len(files))
    found: dict[str, list] = {}
    for path in files:
        if re.search(r"(^|/)subset=(?!warc(/|$))", path):  # crawldiagnostics, robotstxt: never pages
            continue
        for attempt in range(retries + 1):
            try:
                table = _read_table(path, retries, backoff_s)
                break
            except (IndexUnreadable, FileNotFoundError):
                raise
            except remote.RemoteFileError as e:  # retried already, request by request
                raise IndexUnreadable(f"--cc-index {path}: {e}") from e
            except OSError as e:
                if attempt == retries:
                    raise IndexUnreadable(f"--cc-index {path}: cannot be read after {retries} retries: {e}") from e
                time.sleep(remote.backoff_delay(path, attempt, backoff_s))
        if isinstance(table, tuple):
            table, bad = table
            sel.bad_lines += bad
        _select(table, cfg, wanted, sel, found)
    for name in sorted(found):
        offsets, lengths = found[name]
        sel.files[name] = sorted(set(zip(offsets, lengths)))
    return sel


def check_selection(sel: Selection, cfg: CCIndexConfig, dump: str | None = None) -> None:
    """Raise :class:`NothingSelected`, saying why and what to widen, where ``sel`` holds no record."""
    if sel.records:
        return
    if not sel.rows:
        where = f" about the --cc-dump {dump} files chosen (--cc-first/--cc-files)" if dump else ""
        raise NothingSelected(f"the index ({sel.index_files} file(s)) has no row{where}: check --cc-index and --cc-dump")
    why = ", ".join(f"{reason} {n:,}" for reason, n in sel.not_selected.items())
    raise NothingSelected(f"the index selection matches none of its {sel.rows:,} rows (not selected: {why}); widen it with "
                          f"--set cc_index.languages=[...] (now {cfg.languages}), cc_index.unlabelled, cc_index.statuses, "
                          "cc_index.mime_types or cc_index.hosts")


def _read_table(path: str, retries: int = 5, backoff_s: float = 1.0):
    """One index file as a table of COLUMNS: Parquet (by its magic bytes) or CDXJ lines (gzip or not)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def opened():
        if path.startswith(("http://", "https://")):  # Common Crawl's endpoint: every read retried
            return remote.RangedFile(path, retries, backoff_s)
        fs, inner = pio.filesystem(path)
        return fs.open_input_file(inner)

    try:
        with opened() as f:
            head = f.read(4)
    except FileNotFoundError as e:
        raise IndexUnreadable(f"--cc-index {path}: no such file") from e
    if head != b"PAR1":
        with opened() as f:
            return _read_cdxj(path, f.read())
    try:
        with opened() as f:
            schema = pq.read_schema(f)
            lacking = [c for c in COLUMNS if c not in schema.names]
            if lacking:
                raise IndexUnreadable(f"--cc-index {path}: a Parquet file without the columnar index's column(s) {', '.join(lacking)} "
                                      f"(it has {', '.join(schema.names[:12])}{' ...' if len(schema.names) > 12 else ''})")
            return pq.read_table(f, columns=list(COLUMNS))
    except pa.ArrowInvalid as e:
        raise IndexUnreadable(f"--cc-index {path}: not a readable Parquet file ({e})") from e


def _read_cdxj(path: str, data: bytes):
    import pyarrow as pa

    columns: dict[str, list] = {c: [] for c in COLUMNS}
    bad = good = 0
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise IndexUnreadable(f"--cc-index {path}: a gzip file that does not decompress ({e})") from e
    for line in io.BytesIO(data):
        if not line.strip() or line.startswith(b"!"):  # "!" starts a CDX/CDXJ header line
            continue
        try:
            fields = json.loads(line.split(b" ", 2)[2])
            row = {col: fields.get(key) for key, col in _CDXJ_KEYS.items()}
            if row["content_mime_detected"] is None:  # a CDXJ of pywb's indexer has the server's MIME only
                row["content_mime_detected"] = fields.get("mime")
            for col in ("fetch_status", "warc_record_offset", "warc_record_length"):
                row[col] = int(row[col]) if row[col] not in (None, "-") else None
            if row["warc_filename"] is None or row["warc_record_offset"] is None or row["warc_record_length"] is None:
                raise ValueError("no filename, offset or length")
        except (IndexError, ValueError, TypeError, AttributeError):
            bad += 1
            if not good and bad >= 10:
                raise IndexUnreadable(f"--cc-index {path}: neither Parquet nor CDXJ (`<surt> <timestamp> {{json}}` lines): "
                                      f"its first {bad} lines do not parse") from None
            continue
        good += 1
        for col in COLUMNS:
            columns[col].append(row[col])
    if not good:
        raise IndexUnreadable(f"--cc-index {path}: neither Parquet nor CDXJ: no line of it is a CDXJ record")
    types = {"fetch_status": pa.int32(), "warc_record_offset": pa.int64(), "warc_record_length": pa.int64()}
    return pa.table({c: pa.array(columns[c], type=types.get(c, pa.string())) for c in COLUMNS}), bad


def _select(table, cfg: CCIndexConfig, wanted: set[str] | None, sel: Selection, found: dict[str, list]) -> None:
    """Add ``table``'s selected rows to ``found`` ({warc file: [offsets, lengths]}), count the rest."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if wanted is not None:
        table = table.filter(pc.is_in(table["warc_filename"], value_set=pa.array(sorted(wanted), pa.string())))
    sel.rows += table.num_rows
    if not table.num_rows:
        return
    ok = pc.fill_null(pc.is_in(pc.cast(table["fetch_status"], pa.int64()), value_set=pa.array(cfg.statuses, pa.int64())), False)
    rules = [("status", ok)]
    mimes = [m.lower() for m in cfg.mime_types]
    rules.append(("mime", pc.fill_null(pc.is_in(pc.utf8_lower(table["content_mime_detected"]), value_set=pa.array(mimes, pa.string())), False)))
    if cfg.languages:
        codes = "|".join(sorted({re.escape(iso639_3(c)) for c in cfg.languages}))
        langs = table["content_languages"]
        match = pc.fill_null(pc.match_substring_regex(langs, f"{'^' if cfg.primary_language_only else '(^|,)'}({codes})(,|$)"), False)
        if cfg.unlabelled:
            match = pc.or_(match, pc.or_(pc.is_null(langs), pc.equal(pc.fill_null(langs, "x"), "")))
        rules.append(("language", match))
    if cfg.hosts:
        hosts = "|".join(re.escape(h.strip(".").lower()) for h in cfg.hosts)
        pattern = rf"^[a-z][a-z0-9+.-]*://([^/?#@]*@)?([^/?#:]*\.)?({hosts})\.?(:[0-9]*)?([/?#]|$)"
        rules.append(("host", pc.fill_null(pc.match_substring_regex(table["url"], pattern, ignore_case=True), False)))
    keep = pa.array([True] * table.num_rows)
    for reason, mask in rules:
        sel.not_selected[reason] += int(pc.sum(pc.and_(keep, pc.invert(mask))).as_py() or 0)
        keep = pc.and_(keep, mask)
    picked = table.filter(keep).select(["warc_filename", "warc_record_offset", "warc_record_length"])
    for name, offset, length in zip(*(picked[c].to_pylist() for c in picked.column_names)):
        entry = found.setdefault(name, [[], []])
        entry[0].append(offset)
        entry[1].append(length)


# ---------------------------------------------------------------------------------------------
# Byte ranges


@dataclass
class Span:
    """One request: bytes ``start .. end-1`` of a file, holding ``members`` ((offset, length) records)."""

    start: int
    end: int
    members: list[tuple[int, int]]


def coalesce(ranges: list[tuple[int, int]], gap: int, max_bytes: int) -> list[Span]:
    """The requests that fetch ``ranges`` (sorted (offset, length) pairs): neighbours whose gap is
    at most ``gap`` bytes share one request, unless it would exceed ``max_bytes`` (a record larger
    than that gets a request of its own)."""
    spans: list[Span] = []
    for offset, length in ranges:
        end = offset + length
        last = spans[-1] if spans else None
        if last is not None and offset - last.end <= gap and max(end, last.end) - last.start <= max_bytes:
            last.end = max(last.end, end)
            last.members.append((offset, length))
        else:
            spans.append(Span(offset, end, [(offset, length)]))
    return spans


def fetch_plan(sel: Selection, cfg: CCIndexConfig) -> tuple[int, int]:
    """(bytes, requests) that fetching the selection takes with ``cfg``'s gap."""
    spans = [s for ranges in sel.files.values() for s in coalesce(ranges, cfg.gap, cfg.max_request_bytes)]
    return sum(s.end - s.start for s in spans), len(spans)


class IndexedWarc:
    """The selected records of one WARC file, read by byte ranges.

    ``warcinfo()`` is the file's warcinfo record's fields (read from its first bytes, in the first
    request when that starts close enough), as a whole-file read sees them; ``records(stats)``
    yields the selected records in file order as :class:`curation.extract.Record`, counting the
    ones whose range failed. ``reader`` counts requests, retries and bytes.
    """

    def __init__(self, url: str, ranges: list[tuple[int, int]], cfg: CCIndexConfig, cc: CommonCrawlConfig,
                 with_warcinfo: bool = True):
        self.url, self.cfg, self.cc = url, cfg, cc
        self.reader = remote.RangeReader(url, cc.retries, cc.backoff_s, cc.timeout_s)
        self._head = min(cfg.warcinfo_bytes, ranges[0][0]) if with_warcinfo and ranges and ranges[0][0] > 0 else 0
        members = ([(0, self._head)] if self._head else []) + list(ranges)
        self.spans = coalesce(members, cfg.gap, cfg.max_request_bytes)
        self._first: bytes | None = None  # the first span's bytes, once warcinfo() has read them

    def warcinfo(self) -> dict[str, str] | None:
        if not self._head:
            return None
        from curation.extract.warc import NotAnArchive, iter_records

        self._first = self.reader.read(self.spans[0].start, self.spans[0].end - self.spans[0].start)
        try:
            first = next(iter_records(io.BytesIO(self._first[: self._head])), None)
        except NotAnArchive:
            return None
        return first.info if first is not None and first.kind == "warcinfo" else None

    def records(self, stats) -> Iterator:
        """Each selected record, in file order; a range that stays short or unparsable after
        ``range_retries`` fetches is counted as an input dropped under its reason."""
        spans = self.spans
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = []
            next_span = 0
            for i, span in enumerate(spans):
                while next_span < len(spans) and next_span <= i + self.cfg.prefetch:
                    ahead.append(pool.submit(self._fetch, next_span))
                    next_span += 1
                data = ahead.pop(0).result()
                for offset, length in span.members:
                    if self._head and offset == 0 and length == self._head:
                        continue  # the warcinfo bytes: not a selected record
                    piece = data[offset - span.start: offset - span.start + length]
                    rec, reason = self._parse(piece, length)
                    for attempt in range(self.cfg.range_retries):
                        if rec is not None:
                            break
                        time.sleep(remote.backoff_delay(f"{self.url}@{offset}", attempt, self.cc.backoff_s))
                        stats.add("range_refetches")
                        rec, reason = self._parse(pool.submit(self.reader.read, offset, length).result(), length)
                    if rec is None:
                        stats.seen()
                        stats.drop(reason)
                        stats.example(reason, f"{self.url} bytes {offset}-{offset + length - 1}")
                        continue
                    yield rec

    def _fetch(self, i: int) -> bytes:
        span = self.spans[i]
        if i == 0 and self._first is not None:
            data, self._first = self._first, None
            return data
        return self.reader.read(span.start, span.end - span.start)

    @staticmethod
    def _parse(piece: bytes, length: int):
        """(the record, None), or (None, why the bytes are not one record)."""
        from curation.extract.warc import NotAnArchive, iter_records

        if len(piece) < length:
            return None, "range_short_read"
        try:
            recs = list(iter_records(io.BytesIO(piece)))
        except NotAnArchive:
            return None, "range_unparsable"
        if len(recs) != 1 or recs[0].kind == "corrupt":
            return None, "range_unparsable"
        return recs[0], None


# ---------------------------------------------------------------------------------------------
# What a selection costs (--dry-run)


def whole_file_bytes(urls: list[str], cc: CommonCrawlConfig, threads: int = 16) -> tuple[int, dict[str, str]]:
    """(total size of ``urls``, {url: why its size is unknown}): what reading them whole fetches."""
    def size(url: str):
        try:
            return remote.file_size(url, cc.retries, cc.backoff_s, cc.timeout_s)
        except OSError as e:
            return e

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(urls)))) as pool:
        sizes = list(pool.map(size, urls))
    failed = {u: str(s) for u, s in zip(urls, sizes) if isinstance(s, BaseException)}
    return sum(s for s in sizes if not isinstance(s, BaseException)), failed


def describe(sel: Selection, cfg: CCIndexConfig, whole: int | None = None) -> list[str]:
    """The selection in a few lines: records, what was not selected and why, bytes and requests
    to fetch, and (given ``whole``, the files' total size) what a whole-file read would fetch."""
    fetch, requests = fetch_plan(sel, cfg)
    langs = ",".join(sorted({iso639_3(c) for c in cfg.languages})) or "any"
    primary = " first" if cfg.primary_language_only and cfg.languages else ""
    lines = [f"index: {sel.index_files} file(s), {sel.rows:,} rows; selected {sel.records:,} records in {len(sel.files):,} WARC file(s)"
             f" (status {cfg.statuses}, MIME {cfg.mime_types}, languages {langs}{primary}{' or none' if cfg.unlabelled and cfg.languages else ''}"
             f"{', hosts ' + str(cfg.hosts) if cfg.hosts else ''})"]
    if sel.not_selected:
        lines.append("not selected: " + ", ".join(f"{reason} {n:,}" for reason, n in sel.not_selected.items()))
    if sel.bad_lines:
        lines.append(f"index lines that do not parse (skipped): {sel.bad_lines:,}")
    lines.append(f"to fetch: {fetch / 1e6:,.1f} MB in {requests:,} requests (gap {cfg.gap:,} bytes; the selected records alone "
                 f"{sel.record_bytes / 1e6:,.1f} MB)")
    if whole is not None:
        ratio = f": {whole / fetch:.2f}x the bytes" if fetch else ""
        lines.append(f"a whole-file read would fetch: {whole / 1e6:,.1f} MB{ratio}")
    return lines
