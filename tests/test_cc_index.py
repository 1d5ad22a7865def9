"""Reading only what the index selects: real WARC files of data/sample laid out as a Common Crawl
dump and served over loopback HTTP (tests/ccserver.py: Range requests, injected 403, 503 and cut
connections), with an index of them in Common Crawl's columnar layout (FastWARC's offsets, CLD2's
languages, a few deliberately wrong) and as CDXJ."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccserver import index_table, lay_out, serve, write_cdxj
from curation.extract import iter_records
from curation.sources import commoncrawl as cc
from curation.stats import StageStats
from pipelines.cli import main
from storage import remote
from tests.conftest import REPO, SAMPLE

DUMP = "CC-MAIN-2099-01"
# A gzipped Common Crawl WARC (warcinfo with isPartOf, Chinese and European pages), a wget crawl
# (request/response pairs, no crawl name), an uncompressed Heritrix WARC (revisit records).
FILES = ["cc-main-2020-34-sample.warc.gz", "wget-2024-english-0.warc.gz", "heritrix-german-literature.warc"]
RELATIVE = [f"crawl-data/{DUMP}/segments/1700000000000.{i}/warc/{name}" for i, name in enumerate(FILES)]
FAST = cc.CommonCrawlConfig(retries=4, backoff_s=0.01, timeout_s=5)
# Deliberately wrong labels: two English pages called German, a Chinese one called Dutch, a
# German page called English.
RELABEL = {
    "https://www.semanticscholar.org/research/research-team": "deu",
    "https://soldaini.net/": "deu,fra",
    "http://www.ssssss.cn/": "nld",
}


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc-index").resolve()
    assert lay_out(root, DUMP, [SAMPLE / "warc" / name for name in FILES]) == RELATIVE
    table = index_table([(root / rel, rel) for rel in RELATIVE])
    rows = table.to_pylist()
    other = next(r["url"] for r in rows if r["fetch_status"] == 200 and r["content_mime_detected"] == "text/html"
                 and r["content_languages"] and not {"eng", "zho"} & set(r["content_languages"].split(",")))
    wrong = {**RELABEL, other: "eng"}
    labels = [wrong.get(r["url"], r["content_languages"]) for r in rows]
    table = table.set_column(table.schema.get_field_index("content_languages"), "content_languages", pa.array(labels, pa.string()))
    folder = root / "cc-index" / "table" / "cc-main" / "warc" / f"crawl={DUMP}" / "subset=warc"
    folder.mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "part-00000.c000.gz.parquet")
    pq.write_table(table.slice(half), folder / "part-00001.c000.gz.parquet")
    (folder.parent / "subset=crawldiagnostics").mkdir()
    pq.write_table(table.slice(0, 3), folder.parent / "subset=crawldiagnostics" / "part-00000.c000.gz.parquet")
    write_cdxj(table, root / "cdx-00000.gz")
    with serve(root) as server:
        server.table, server.index, server.other = table, folder.parent, other
        yield server


@pytest.fixture
def server(crawl):
    crawl.reset()
    return crawl


def _expected(table, languages=("eng", "zho"), unlabelled=True, primary=True) -> dict[str, list[tuple[int, int]]]:
    """The selection worked out row by row, independently of read_index's vectorised rules."""
    out: dict[str, list] = {}
    for r in table.to_pylist():
        langs = (r["content_languages"] or "").split(",") if r["content_languages"] else []
        if r["fetch_status"] != 200 or r["content_mime_detected"] not in ("text/html", "application/xhtml+xml"):
            continue
        if languages is not None and ((langs and not set(langs[:1] if primary else langs) & set(languages)) or (not langs and not unlabelled)):
            continue
        out.setdefault(r["warc_filename"], []).append((r["warc_record_offset"], r["warc_record_length"]))
    return {k: sorted(v) for k, v in sorted(out.items())}


# ---------------------------------------------------------------------------------------------
# Selection


def test_selection_follows_the_index_status_mime_and_languages(server):
    sel = cc.read_index([str(server.index)], cc.CCIndexConfig())
    assert sel.files == _expected(server.table)
    assert sel.index_files == 3 and sel.rows == server.table.num_rows  # the crawldiagnostics subset is never read
    assert sel.not_selected["status"] > 0 and sel.not_selected["mime"] > 0 and sel.not_selected["language"] > 0
    picked = {(r["warc_filename"], r["warc_record_offset"]): r["url"] for r in server.table.to_pylist()}
    urls = {picked[(f, o)] for f, ranges in sel.files.items() for o, _ in ranges}
    # The index decides: wrongly labelled English and Chinese pages are skipped, a page in another language labelled English is read.
    assert not urls & set(RELABEL) and server.other in urls
    assert "https://www.cs.washington.edu/people/faculty/weld" in urls  # an English page, labelled eng
    # Languages as the filter writes them or as the index does; none: every language.
    assert cc.read_index([str(server.index)], cc.CCIndexConfig(languages=["eng", "zh"])).files == sel.files
    everything = cc.read_index([str(server.index)], cc.CCIndexConfig(languages=[]))
    assert everything.files == _expected(server.table, languages=None)
    assert cc.read_index([str(server.index)], cc.CCIndexConfig(unlabelled=False)).files == _expected(server.table, unlabelled=False)
    anywhere = cc.read_index([str(server.index)], cc.CCIndexConfig(primary_language_only=False))
    assert anywhere.files == _expected(server.table, primary=False) != sel.files  # a page with English second is read too


def test_selection_by_hosts_and_by_the_dumps_files(server):
    sel = cc.read_index([str(server.index)], cc.CCIndexConfig(languages=[], hosts=["washington.edu", "cn"]))
    urls = {r["url"] for r in server.table.to_pylist() for f, ranges in sel.files.items()
            if r["warc_filename"] == f and (r["warc_record_offset"], r["warc_record_length"]) in ranges}
    assert urls and all(u.split("/")[2].endswith((".washington.edu", ".cn")) for u in urls)
    only = cc.read_index([str(server.index)], cc.CCIndexConfig(), warc_files=[RELATIVE[1]])
    assert list(only.files) == [RELATIVE[1]] and only.files[RELATIVE[1]] == _expected(server.table)[RELATIVE[1]]


def test_cdxj_selects_what_the_columnar_index_selects(server, tmp_path):
    assert cc.read_index([str(server.root / "cdx-00000.gz")], cc.CCIndexConfig()).files == _expected(server.table)
    # pywb's cdxj-indexer (no languages, the server's MIME type): the same records as the
    # columnar index's HTML answers with status 200, whatever their language.
    out = subprocess.run([str(Path(sys.executable).parent / "cdxj-indexer"), str(server.root / RELATIVE[1])],
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "wget.cdxj").write_text(out)
    sel = cc.read_index([str(tmp_path / "wget.cdxj")], cc.CCIndexConfig())
    name = Path(RELATIVE[1]).name  # cdxj-indexer names the file as given, without the dump's folders
    assert sel.files == {name: _expected(server.table, languages=None)[RELATIVE[1]]}


def test_an_index_in_an_object_store(server, bucket):
    for i, path in enumerate(sorted((server.index / "subset=warc").iterdir())):
        pq.write_table(pq.read_table(path), f"{bucket[5:]}/cc-index/part-{i}.parquet", filesystem=_s3fs())
    assert cc.read_index([f"{bucket}/cc-index/"], cc.CCIndexConfig()).files == _expected(server.table)


def test_an_index_over_http_through_403_and_503(server):
    part = sorted((server.index / "subset=warc").iterdir())[0]
    url = server.base_url + str(part.relative_to(server.root))
    server.faults["/" + str(part.relative_to(server.root))] = ["403", "503"]
    sel = cc.read_index([url], cc.CCIndexConfig(), retries=FAST.retries, backoff_s=FAST.backoff_s)
    assert sel.files == cc.read_index([str(part)], cc.CCIndexConfig()).files and sel.records > 0
    assert [m for m, _, _ in server.requests[:3]] == ["HEAD"] * 3 and len(server.requests) > 3


def _s3fs():
    from storage import io

    return io.filesystem("s3://x")[0]


def test_coalescing_merges_neighbours_within_the_gap():
    ranges = [(100, 50), (160, 40), (210, 10), (1000, 100), (1100, 5000)]
    assert [(s.start, s.end) for s in cc.coalesce(ranges, gap=0, max_bytes=1 << 20)] == [(100, 150), (160, 200), (210, 220), (1000, 6100)]
    assert [(s.start, s.end) for s in cc.coalesce(ranges, gap=10, max_bytes=1 << 20)] == [(100, 220), (1000, 6100)]
    spans = cc.coalesce(ranges, gap=1000, max_bytes=1000)  # bounded: the large record goes alone
    assert [(s.start, s.end, len(s.members)) for s in spans] == [(100, 1100, 4), (1100, 6100, 1)]
    sel = cc.Selection(files={"a": ranges})
    assert cc.fetch_plan(sel, cc.CCIndexConfig(gap=10)) == (120 + 5100, 2)


# ---------------------------------------------------------------------------------------------
# Fetching


def _whole_file_records(path: Path, ranges) -> list:
    offsets = {o for o, _ in ranges}
    import fastwarc.warc

    with open(path, "rb") as f:
        positions = [r.stream_pos for r in fastwarc.warc.ArchiveIterator(f, parse_http=False)]
    with open(path, "rb") as f:
        return [rec for pos, rec in zip(positions, (r for r in iter_records(f))) if pos in offsets]


def test_ranges_read_the_records_a_whole_file_read_gives_through_403_503_and_cuts(server):
    sel = cc.read_index([str(server.index)], cc.CCIndexConfig())
    rel = RELATIVE[1]
    ranges = sel.files[rel]
    cfg = cc.CCIndexConfig(gap=0, prefetch=1)
    server.faults["/" + rel] = ["403", "503", "drop:3000", "403"]
    warc = cc.IndexedWarc(server.base_url + rel, ranges, cfg, FAST)
    stats = StageStats()
    assert warc.warcinfo()["software"].startswith("Wget")
    got = list(warc.records(stats))
    assert got == _whole_file_records(server.root / rel, ranges) and stats.input == 0
    assert warc.reader.retries == 4 and warc.reader.requests == len(warc.spans) + 1  # the cut range resumed
    resumed = [r for _, _, r in server.requests if r and not r.startswith("bytes=0-")]
    assert any(int(r[6:].split("-")[0]) not in {s.start for s in warc.spans} for r in resumed)


def test_a_range_reader_on_s3_and_on_a_local_mirror(server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.base_url.rstrip("/"))
    data = (server.root / RELATIVE[0]).read_bytes()
    for url in ("s3://commoncrawl/" + RELATIVE[0], str(server.root / RELATIVE[0]), server.base_url + RELATIVE[0]):
        with remote.RangeReader(url, retries=2, backoff_s=0.01) as r:
            assert r.read(1000, 500) == data[1000:1500]
            assert r.read(len(data) - 10, 100) == data[-10:] and r.size == len(data)  # the file ends first
            assert r.read(len(data) + 5, 10) == b""
    assert remote.file_size(server.base_url + RELATIVE[0]) == len(data) == remote.file_size("s3://commoncrawl/" + RELATIVE[0])


def test_ranges_that_stay_short_or_unparsable_are_retried_then_counted(server):
    rel = RELATIVE[0]
    size = (server.root / rel).stat().st_size
    good = cc.read_index([str(server.index)], cc.CCIndexConfig()).files[rel]
    (o1, n1), (o2, n2) = good[1], good[-1]
    bad = [good[0], (o1 + 7, n1), *good[2:-1], (o2, size - o2 + 100)]  # an offset off by 7; a length past the end
    server.faults["/" + rel] = ["503"]
    warc = cc.IndexedWarc(server.base_url + rel, bad, cc.CCIndexConfig(range_retries=2), FAST, with_warcinfo=False)
    stats = StageStats()
    got = list(warc.records(stats))
    assert got == _whole_file_records(server.root / rel, [good[0], *good[2:-1]])
    assert dict(stats.dropped) == {"range_unparsable": 1, "range_short_read": 1} and stats.input == 2
    assert stats.counters["range_refetches"] == 4 and "bytes" in stats.examples["range_unparsable"]


# ---------------------------------------------------------------------------------------------
# The stage


def test_the_index_path_writes_the_rows_a_whole_file_read_writes(server, tmp_path, ray_session):
    """A whole-file read by the stage's function, then the index path by `pipelines run` (its
    extract section: cc_index, cc_base_url) through injected 403, 503 and cut connections."""
    import json

    from curation.extract import ExtractConfig
    from pipelines.extract import extract

    urls = [server.base_url + r for r in RELATIVE]
    fast = cc.CommonCrawlConfig(base_url=server.base_url, retries=FAST.retries, backoff_s=FAST.backoff_s, timeout_s=FAST.timeout_s)
    assert extract(urls, str(tmp_path / "whole"), ExtractConfig(), cc=fast) == 0
    server.faults.update({"/" + RELATIVE[0]: ["403", "drop:2000"], "/" + RELATIVE[1]: ["503"], "/" + RELATIVE[2]: ["drop:100"]})
    sets = [f"output={tmp_path / 'run'}", "stages=[extract]", "extract.inputs=[]", "extract.prefilter=false",
            f"extract.cc_index=[{server.index}]", f"extract.cc_base_url={server.base_url}"]
    assert main(["run", "--config", str(REPO / "configs" / "demo.yaml"), "--no-report", *[x for s in sets for x in ("--set", s)]]) == 0
    index_out = tmp_path / "run" / "extracted"
    assert all(sum(1 for _, p, _ in server.requests if p == "/" + r) >= 2 for r in RELATIVE)
    kept = 0
    for rel in RELATIVE:
        name = Path(rel).name.split(".warc")[0] + ".parquet"
        index_rows = pq.read_table(index_out / "data" / name).to_pylist()
        ids = {r["id"] for r in index_rows}
        whole_rows = [r for r in pq.read_table(tmp_path / "whole" / "data" / name).to_pylist() if r["id"] in ids]
        assert index_rows == whole_rows and len(ids) == len(index_rows)
        kept += len(index_rows)
    selection = cc.read_index([str(server.index)], cc.CCIndexConfig())
    stats = json.loads((index_out / "stats.json").read_text())
    assert stats["input"] == selection.records and stats["output"] == kept > 30
    assert stats["counters"]["retries"] == 4  # 403 + cut, 503, cut
    assert selection.record_bytes <= stats["counters"]["bytes_read"] < sum((server.root / r).stat().st_size for r in RELATIVE)
    # The English pages the index mislabelled are not read; the page in another language it calls English is.
    whole = {r["url"] for r in pq.read_table(tmp_path / "whole" / "data").to_pylist()}
    index = {r["url"] for r in pq.read_table(index_out / "data").to_pylist()}
    assert not index & set(RELABEL) and whole & set(RELABEL) and server.other in index


def test_dry_run_shows_the_selection_and_what_it_saves(server, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["extract", "--cc-index", str(server.index), "--cc-base-url", server.base_url, "--output", str(out), "--dry-run",
                 "--set", "cc_index.gap=0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sel = cc.read_index([str(server.index)], cc.CCIndexConfig())
    whole = sum((server.root / r).stat().st_size for r in RELATIVE)
    assert lines[0].startswith(f"extract: dry run: index: 3 file(s), {server.table.num_rows:,} rows; selected {sel.records:,} records in 3 WARC file(s)")
    fetch, requests = cc.fetch_plan(sel, cc.CCIndexConfig(gap=0))
    assert fetch == sel.record_bytes and requests > 0.8 * sel.records
    assert f"to fetch: {fetch / 1e6:,.1f} MB in {requests:,} requests (gap 0 bytes" in lines[2]
    assert lines[3] == f"extract: dry run: a whole-file read would fetch: {whole / 1e6:,.1f} MB: {whole / fetch:.2f}x the bytes"
    assert not out.exists() and all(m == "HEAD" for m, _, _ in server.requests)
    # The dump's listing picks the files: the index is read for those only.
    assert main(["extract", "--cc-index", str(server.index), "--cc-dump", DUMP, "--cc-base-url", server.base_url, "--cc-first", "2",
                 "--output", str(out), "--dry-run"]) == 0
    assert " in 1 WARC file(s)" in capsys.readouterr().out


def test_a_selection_of_nothing_and_an_unreadable_index_end_in_one_line(server, tmp_path, capsys):
    def one_line(*args: str) -> str:
        assert main(["extract", "--output", str(tmp_path / "x"), "--cc-base-url", server.base_url, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pipelines extract: error: "), err
        return err[0]

    line = one_line("--cc-index", str(server.index), "--set", "cc_index.languages=[tlh]", "--set", "cc_index.unlabelled=false")
    assert "matches none of its" in line and "language" in line and "cc_index.languages" in line
    (tmp_path / "notes.parquet").write_text("not an index\n" * 20)
    assert "notes.parquet: neither Parquet nor CDXJ" in one_line("--cc-index", str(tmp_path / "notes.parquet"))
    pq.write_table(server.table.drop(["warc_record_length"]), tmp_path / "short.parquet")
    assert "without the columnar index's column(s) warc_record_length" in one_line("--cc-index", str(tmp_path / "short.parquet"))
    assert "no such file or folder" in one_line("--cc-index", str(tmp_path / "none.parquet"))


def test_pipeline_dry_run_plans_the_index(server, tmp_path, capsys):
    sets = [f"output={tmp_path / 'run'}", "stages=[extract]", "extract.inputs=[]", f"extract.cc_index=[{server.index}]",
            f"extract.cc_base_url={server.base_url}", "filter.config.language.keep=[en]"]
    assert main(["run", "--config", str(REPO / "configs" / "demo.yaml"), "--dry-run", *[x for s in sets for x in ("--set", s)]]) == 0
    plan = capsys.readouterr().out
    english = cc.read_index([str(server.index)], cc.CCIndexConfig(languages=["en"]))
    assert f"note     index: 3 file(s), {server.table.num_rows:,} rows; selected {english.records:,} records" in plan
    assert "languages eng first or none" in plan and "a whole-file read would fetch" in plan
    sets.append("extract.config.cc_index.languages=[de]")
    assert main(["run", "--config", str(REPO / "configs" / "demo.yaml"), "--dry-run", *[x for s in sets for x in ("--set", s)]]) == 2
    assert "extract.config gives cc_index.languages" in capsys.readouterr().err
