"""The extraction stage on the real sample WARCs and the shared edge cases."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SAMPLE, shared
from curation.extract import ExtractConfig, Extractor, iter_records
from curation.extract.sandbox import CallTimedOut, Sandbox
from curation.schema import validate
from curation.stats import StageStats
from pipelines.cli import main

CC_SAMPLE = SAMPLE / "warc" / "cc-main-2020-34-sample.warc.gz"


def _extract(*args: str) -> int:
    return main(["extract", *args])


def _docs(folder: Path) -> list[dict]:
    rows = []
    for f in sorted((folder / "data").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory, ray_session) -> Path:
    out = tmp_path_factory.mktemp("extracted")
    assert _extract("--input", str(SAMPLE / "warc"), "--output", str(out)) == 0
    return out


def test_schema_ids_and_dumps(sample_out):
    for f in sorted((sample_out / "data").glob("*.parquet")):
        validate(pq.read_schema(f))
    docs = _docs(sample_out)
    assert len(docs) > 100
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 for i in ids)
    by_url = {d["url"]: d for d in docs}
    # Common Crawl's warcinfo names the crawl; other archives fall back to their file name.
    assert by_url["http://01spb.ru/company/"]["dump"] == "CC-MAIN-2020-34"
    assert {d["dump"] for d in docs if "wget-2024-english-0" in d["metadata"]["source_file"]} == {"wget-2024-english-0"}
    assert all(d["text"].strip() and d["crawl_date"] for d in docs)
    assert all(d["metadata"]["warc_record_id"].startswith("<urn:uuid:") for d in docs)


def test_accounting_identity(sample_out):
    stats = json.loads((sample_out / "stats.json").read_text())
    assert stats["input"] == stats["output"] + sum(stats["dropped"].values())
    assert stats["output"] == len(_docs(sample_out))
    # The sample holds request/metadata records, images and redirects: each counted by reason.
    assert stats["dropped"]["not_response"] > 0 and stats["dropped"]["not_html"] > 0 and stats["dropped"]["http_status"] > 0
    per_file = [json.loads(p.read_text()) for p in sorted((sample_out / "_stats").glob("*.json"))]
    assert sum(s["input"] for s in per_file) == stats["input"]


def test_charsets_and_languages_on_real_pages(sample_out):
    by_url = {d["url"]: d for d in _docs(sample_out)}
    ru = by_url["http://01spb.ru/company/"]  # windows-1251, declared in the HTTP header
    assert ru["metadata"]["charset"] == "cp1251"
    assert ru["language"] == "ru" and "\ufffd" not in ru["text"]
    assert any("а" <= c <= "я" for c in ru["text"])
    gb = by_url["http://0760.jxtdw.com/area/sanxiang/"]  # gb2312 in the header, decoded as gb18030
    assert gb["metadata"]["charset"] == "gb18030"
    assert gb["language"] == "zh" and gb["language_score"] > 0.65
    assert "职位名称" in gb["text"] and "\ufffd" not in gb["text"]
    undeclared = by_url["http://0755krk.com/76104/list_4_1.html"]  # no HTTP charset: <meta> decides
    assert undeclared["language"] == "zh" and "\ufffd" not in undeclared["text"]
    nl = by_url["http://0900-hovenier.nl/gelderland/oosterbeek/"]
    assert nl["language"] == "nl"


def test_wet_conversion_records_are_text(tmp_path, ray_session):
    wet = SAMPLE / "warc" / "cc-main-2024-22-wikipedia.warc.wet.gz"
    assert _extract("--input", str(wet), "--output", str(tmp_path)) == 0
    (doc,) = _docs(tmp_path)
    assert doc["dump"] == "CC-MAIN-2024-22" and doc["metadata"]["content_type"] == "text/plain"
    assert "Wikipedia" in doc["text"] or len(doc["text"]) > 500


def test_resume_skips_complete_shards(tmp_path, ray_session):
    files = [str(CC_SAMPLE), str(SAMPLE / "warc" / "wget-2024-english-0.warc.gz")]
    assert _extract("--input", *files, "--output", str(tmp_path / "full")) == 0
    out = tmp_path / "partial"
    assert _extract("--input", *files, "--output", str(out)) == 0
    # Simulate a run that died mid-way: one shard gone, a temporary file left behind.
    (out / "data" / "wget-2024-english-0.parquet").unlink()
    (out / "data" / ".wget-2024-english-0.parquet.tmp-deadbeef").write_bytes(b"half a shard")
    kept = out / "data" / "cc-main-2020-34-sample.parquet"
    before = kept.stat().st_mtime_ns
    assert _extract("--input", *files, "--output", str(out)) == 0
    assert kept.stat().st_mtime_ns == before  # complete output skipped, not redone
    for name in ("data/cc-main-2020-34-sample.parquet", "data/wget-2024-english-0.parquet", "stats.json"):
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_same_output_with_one_and_two_workers(tmp_path, ray_session):
    files = [str(CC_SAMPLE), str(SAMPLE / "warc" / "wget-2024-english-0.warc.gz"), str(SAMPLE / "warc" / "wget-2024-english-1.warc.gz")]
    for workers in ("1", "2"):
        assert _extract("--input", *files, "--output", str(tmp_path / workers), "--workers", workers) == 0
    one = sorted(f"data/{p.name}" for p in (tmp_path / "1" / "data").glob("*.parquet"))
    assert one == sorted(f"data/{p.name}" for p in (tmp_path / "2" / "data").glob("*.parquet")) and len(one) == 3
    for name in one + ["stats.json"]:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def _file_stats(path: Path) -> tuple[StageStats, list[dict]]:
    stats = StageStats()
    with Extractor() as ex, open(path, "rb") as f:
        docs = list(ex.documents(iter_records(f), stats, str(path)))
    stats.check()
    return stats, docs


def test_edge_case_files():
    edge = shared("warc", "edge-cases")
    stats, docs = _file_stats(edge / "example-trunc.warc")  # framing lost after the first records
    assert stats.dropped["corrupt_record"] == 1 and stats.output == 1
    stats, docs = _file_stats(edge / "example.arc.gz")  # ARC, read through warcio's conversion
    assert stats.output == 1 and docs[0]["url"] == "http://example.com/"
    stats, docs = _file_stats(edge / "example-iana.org-chunked.warc")  # chunked transfer encoding
    assert stats.output == 1 and "Management of the DNS Root Zone" in docs[0]["text"]
    assert not docs[0]["text"].startswith("001c37")
    stats, docs = _file_stats(edge / "example-resource.warc.gz")  # a resource record holding HTML
    assert stats.output == 1
    for name in ("example.warc.gz", "example-bad-non-chunked.warc.gz"):
        stats, _ = _file_stats(edge / name)
        assert stats.dropped["not_response"] >= 3  # warcinfo, request, revisit
    stats, _ = _file_stats(shared("warc", "truncated-gzip.warc.gz"))
    assert stats.input == 1 and stats.dropped["truncated_record"] == 1


def test_bad_files_are_named_and_the_rest_processed(tmp_path, ray_session, capsys):
    not_warc = tmp_path / "notes.warc.gz"
    not_warc.write_bytes(b"this is not an archive\n" * 10)
    out = tmp_path / "out"
    rc = _extract("--input", str(CC_SAMPLE), str(not_warc), str(tmp_path / "missing.warc.gz"), "--output", str(out))
    assert rc == 1
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["failed_files"]) == {str(not_warc), str(tmp_path / "missing.warc.gz")}
    assert "not a WARC" in stats["failed_files"][str(not_warc)]
    assert stats["output"] == 16 and (out / "data" / "cc-main-2020-34-sample.parquet").exists()
    assert "FAILED inputs (2)" in capsys.readouterr().err


def test_hanging_extractor_costs_one_document():
    with Sandbox("time:sleep", timeout_s=0.5) as box:
        with pytest.raises(CallTimedOut):
            box(30)
        assert box(0) is None  # a fresh child took over
        assert box.restarts == 1
    with Sandbox("builtins:bytearray", timeout_s=30, memory_mb=512) as box:
        with pytest.raises(MemoryError):
            box(8 * 1024**3)
        assert len(box(10)) == 10


def test_timeouts_are_counted_not_fatal():
    stats = StageStats()
    with Extractor(ExtractConfig(timeout_s=0.0001)) as ex, open(CC_SAMPLE, "rb") as f:
        docs = list(ex.documents(iter_records(f), stats, str(CC_SAMPLE)))
    stats.check()
    assert stats.dropped["extraction_timeout"] >= 10 and stats.input == 50
    assert len(docs) == stats.output


def test_trafilatura_fix_leaves_every_pages_text_unchanged():
    # The sample's archive.org forum pages are the ones the fix is for (nested layout tables).
    import trafilatura

    from curation.extract import trafilatura_fix

    cfg = ExtractConfig(sandbox=False)
    pages = []
    with Extractor(cfg) as ex:
        for path in sorted(glob.glob(str(SAMPLE / "warc" / "*.warc*"))):
            with open(path, "rb") as f:
                pages += [(rec.uri, html) for rec, html in ex.pages(iter_records(f))]
    assert len(pages) > 100 and any("iathreads/forum-display" in (url or "") for url, _ in pages)

    def texts() -> list[str | None]:
        return [trafilatura.extract(html, url=url, fast=cfg.fast, include_comments=cfg.include_comments,
                                    include_tables=cfg.include_tables, with_metadata=False, deduplicate=False)
                for url, html in pages]

    trafilatura_fix.uninstall()
    stock = texts()
    if not trafilatura_fix.install():
        pytest.skip(f"trafilatura {trafilatura.__version__}: the fix applies to 2.3.1's code only, so it is not installed")
    assert texts() == stock


_TAGS = ["div", "p", "span", "td", "tr", "table", "th", "aside", "form", "footer", "math", "figure", "img", "font"]


@st.composite
def _html_trees(draw, depth: int = 0):
    """Small element trees in which any tag may nest in itself (a <td> inside a <td>), with text and tails."""
    from lxml.html import Element

    words = st.one_of(st.none(), st.sampled_from(["a", "b c", " ", "\n"]))
    elem = Element(draw(st.sampled_from(_TAGS)))
    elem.text = draw(words)
    for child in draw(st.lists(_html_trees(depth + 1), max_size=0 if depth >= 4 else 4)):
        child.tail = draw(words)
        elem.append(child)
    return elem


@settings(max_examples=300, deadline=None)
@given(tree=_html_trees(), tables=st.booleans(), recall=st.booleans(), images=st.booleans())
def test_trafilatura_fix_cleans_trees_as_upstream_does(tree, tables, recall, images):
    # Upstream's loop and the fix must leave the very same tree, whatever nests in what.
    from copy import deepcopy

    from lxml import etree, html
    from trafilatura import htmlprocessing
    from trafilatura.settings import Extractor as Options

    from curation.extract import trafilatura_fix

    trafilatura_fix.uninstall()
    if htmlprocessing.tree_cleaning.__module__ != "trafilatura.htmlprocessing":
        pytest.skip("trafilatura's own tree_cleaning is not reachable")
    root = html.Element("html")
    body = etree.SubElement(root, "body")
    body.append(tree)
    options = Options(tables=tables, recall=recall, images=images)
    stock = htmlprocessing.tree_cleaning(deepcopy(root), options)
    fixed = trafilatura_fix.tree_cleaning(deepcopy(root), options)
    assert etree.tostring(fixed) == etree.tostring(stock)
