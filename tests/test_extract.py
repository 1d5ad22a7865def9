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
from warcs import warc_response
from curation.extract import ExtractConfig, Extractor, iter_records
from curation.extract.sandbox import CallCrashed, CallTimedOut, Sandbox
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
    rc = _extract("--input", str(CC_SAMPLE), str(not_warc), "--output", str(out))
    assert rc == 1
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["failed_files"]) == {str(not_warc)}
    assert "not a WARC" in stats["failed_files"][str(not_warc)]
    assert stats["output"] == 16 and (out / "data" / "cc-main-2020-34-sample.parquet").exists()
    assert "FAILED inputs (1)" in capsys.readouterr().err


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


def test_a_batch_of_calls_has_each_calls_outcome_and_limits():
    # One message for the batch; a call that costs the child (time limit, memory cap, death)
    # costs only itself: the rest go to a fresh child, in order, each with its own time limit.
    with Sandbox("time:sleep", timeout_s=1.0) as box:
        out = box.map([(0,), (0.6,), (30,), (0.6,), (0,)])
        assert out[:2] == [None, None] and isinstance(out[2], CallTimedOut) and out[3:] == [None, None]
        assert box.restarts == 1
    with Sandbox("builtins:bytearray", timeout_s=30, memory_mb=512) as box:
        out = box.map([(3,), (8 * 1024**3,), (5,)])
        assert out[0] == bytearray(3) and isinstance(out[1], MemoryError) and out[2] == bytearray(5)
    with Sandbox("builtins:exec", timeout_s=30) as box:
        out = box.map([("x = 1",), ("raise ValueError('bad page')",), ("import os; os._exit(3)",), ("y = 2",)])
        assert out[0] is None and out[3] is None
        assert isinstance(out[1], CallCrashed) and "bad page" in str(out[1])  # an error: the child goes on
        assert isinstance(out[2], CallCrashed) and "died" in str(out[2])


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


# ---- the stage's switches, the pre-pass, the second extractor ----

def _stage(tmp_path: Path, path: Path, *overrides: str) -> tuple[dict, dict[str, dict]]:
    """The stage's task function on one file, config from --set style overrides (no Ray)."""
    import dataclasses

    from pipelines import config
    from pipelines.extract import extract_file

    out = tmp_path / "-".join([path.name, *(o.replace("/", "_") for o in overrides)])
    cfg = dataclasses.asdict(config.load(ExtractConfig, None, list(overrides)))
    stats = extract_file((str(path), str(out / "shard.parquet"), str(out / "_stats" / "shard.json"), cfg, None, None))
    StageStats.from_dict(stats).check()
    docs = {d["id"]: d for d in pq.read_table(out / "shard.parquet").to_pylist()}
    assert stats["output"] == len(docs)
    return stats, docs


def _filter_keeps(doc: dict) -> bool:
    """The filter's language and length rules (its defaults) on one document."""
    from curation.filter import FilterConfig, split_words

    cfg = FilterConfig()
    return (doc["language"] in cfg.language.keep and doc["language_score"] >= cfg.language.min_score
            and len(split_words(doc["text"], doc["language"])) >= cfg.gopher_quality.min_words)


def test_prefilter_skips_only_what_the_filter_would_drop(tmp_path):
    # The real CC-MAIN-2020-34 sample: Chinese pages, German, Dutch, Russian, English ones.
    full_stats, full = _stage(tmp_path, CC_SAMPLE)
    stats, kept = _stage(tmp_path, CC_SAMPLE, "prefilter.enabled=true", "prefilter.languages=[en]")
    assert stats["input"] == full_stats["input"]
    # Skipped pages are counted under their own reasons, the language of each in the counters.
    skipped = stats["dropped"]["prefilter_language"]
    assert skipped >= 10
    labels = {k.split(".", 1)[1]: v for k, v in stats["counters"].items() if k.startswith("prefilter_language.")}
    assert sum(labels.values()) == skipped and labels["zh"] >= 8 and {"de", "ru"} <= set(labels)
    assert "en" not in labels
    # What it keeps is what the full path gives, document for document; nothing it skipped was
    # a document the filter keeps.
    assert all(kept[i] == full[i] for i in kept)
    only_en = {i for i, d in full.items() if d["language"] == "en" and _filter_keeps(d)}
    assert only_en and only_en <= set(kept)
    # For the filter's own languages (its defaults: en, zh) the Chinese pages stay.
    stats, kept = _stage(tmp_path, CC_SAMPLE, "prefilter.enabled=true")
    assert {i for i, d in full.items() if _filter_keeps(d)} <= set(kept)
    assert not any(k.startswith("prefilter_language.zh") for k in stats["counters"])
    # Too little text to pass the filter's minimum: the German literature pages of the Heritrix
    # crawl are short link pages, each one a document the filter drops for its length.
    german = SAMPLE / "warc" / "heritrix-german-literature.warc"
    _, full = _stage(tmp_path, german)
    stats, kept = _stage(tmp_path, german, "prefilter.enabled=true")
    assert stats["dropped"]["prefilter_short"] == 4 and len(full) == 3 and not kept  # (the 4th gives no text at all)
    from curation.filter import split_words

    assert all(len(split_words(d["text"], d["language"])) < 50 for d in full.values())


def test_extractor_and_fix_switches(tmp_path):
    path = SAMPLE / "warc" / "wget-2024-english-0.warc.gz"
    _, traf = _stage(tmp_path, path)
    _, stock = _stage(tmp_path, path, "trafilatura_fix=false")
    assert stock == traf  # the fix changes no document, only the CPU it takes
    _, resili = _stage(tmp_path, path, "extractor=resiliparse")
    assert set(resili) == set(traf) and len(traf) == 22
    differ = sum(resili[i]["text"] != traf[i]["text"] for i in traf)
    assert differ >= 15, "the second extractor is not running"
    assert all(d["language"] == "en" and len(d["text"]) > 50 for d in resili.values())
    assert all(resili[i]["metadata"] == traf[i]["metadata"] for i in traf)


def test_page_the_renderer_cannot_parse_goes_to_trafilatura(tmp_path):
    # UTF-7 (an XSS vector) decodes to lone surrogates, which resiliparse refuses: the pre-pass
    # cannot render the page, which must still be extracted and the failure counted.
    body = (b"<html><head><meta charset='utf-7'><title>t</title></head><body><article><p>"
            + b"A long paragraph of English text about the history of cats and dogs in the city. " * 20
            + b"+2AA- end</p></article></body></html>")
    path = tmp_path / "utf7.warc.gz"
    path.write_bytes(warc_response(body, b"text/html"))
    stats, docs = _stage(tmp_path, path, "prefilter.enabled=true")
    assert stats["counters"]["prefilter_render_failed"] == 1
    assert stats["output"] == 1 and "history of cats" in next(iter(docs.values()))["text"]


def test_bad_settings_end_in_one_line(tmp_path, capsys):
    for bad in ("extractor=boilerpipe", "prefilter.languages=en", "prefilter.nonsense=1"):
        assert _extract("--input", str(CC_SAMPLE), "--output", str(tmp_path / "x"), "--set", bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("extract: bad config:"), err
    assert not (tmp_path / "x").exists()


def test_prefilter_through_the_cli(tmp_path, ray_session):
    out = tmp_path / "out"
    assert _extract("--input", str(CC_SAMPLE), "--output", str(out), "--set", "prefilter.enabled=true", "--set", "prefilter.languages=[en,zh]") == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input"] == stats["output"] + sum(stats["dropped"].values())
    assert stats["dropped"]["prefilter_language"] >= 3 and stats["counters"]["prefilter_language.de"] >= 1


def test_pipeline_runs_the_prefilter_with_the_filters_languages(tmp_path):
    from pipelines import pipeline_config
    from pipelines.config import ConfigError
    from pipelines.run import extract_config

    def prefilter(cfg: dict):
        (tmp_path / "c.yaml").write_text(json.dumps(cfg))
        return extract_config(pipeline_config.load(str(tmp_path / "c.yaml"))).prefilter

    for name in ("demo", "laptop", "cluster"):  # on in every pipeline config, for the filter's languages
        p = extract_config(pipeline_config.load(str(Path(__file__).parents[1] / "configs" / f"{name}.yaml"))).prefilter
        assert p.enabled and p.languages == ["en", "zh"] and p.min_words == 50, name
    base = {"output": str(tmp_path / "run"), "extract": {"inputs": [str(CC_SAMPLE)], "prefilter": True}}
    p = prefilter({**base, "filter": {"config": {"language": {"keep": ["en"]}, "gopher_quality": {"min_words": 80}}}})
    assert p.languages == ["en"] and p.min_words == 80
    p = prefilter({**base, "filter": {"config": {"disabled_rules": ["language"]}}})
    assert p.languages == []  # a rule the filter skips is not anticipated
    assert not prefilter({**base, "extract": {"inputs": [str(CC_SAMPLE)]}}).enabled
    with pytest.raises(ConfigError, match="filter.config"):
        prefilter({**base, "extract": {**base["extract"], "config": {"prefilter": {"languages": ["de"]}}}})


def test_sandbox_passes_large_payloads_across_restarts():
    import zlib

    with Sandbox("zlib:crc32", timeout_s=30) as box:
        for size in (10, 20_000, 3_000_000, 100_000, 12_000_000):  # the shared buffer grows on demand
            data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            assert box(data) == zlib.crc32(data)
        box.timeout_s = 0.0001
        with pytest.raises(CallTimedOut):
            box(b"y" * 5_000_000)
        box.timeout_s = 30
        data = b"z" * 2_000_000
        assert box(data) == zlib.crc32(data) and box.restarts == 1


_ATTR_WORDS = st.sampled_from(["", "comment", "comments-title", "nav", "sidebar", "share-x", "hidden", "display:none", "post-reply-x",
                               "cookie", "footer", "main", "content-body", "article", "bottom", "link", "a b", "Author", "byline", "tags",
                               # words that only some of the patterns of fix 7's tests take
                               "reply-x", "Comment", "commentary", "comol", "disqus_thread", "post-comments", "akismet", "Nav",
                               "reader-comments", "cookie-banner", "CookieConsent", "caption", "Teaser", "mvp-post-add-box",
                               "infinite-scroll", "elementor-share-buttons", "MostPopularStories", "true", "display: none", "^ad-"])
_ATTRS = ("class", "id", "style", "role", "aria-hidden", "data-component", "data-lp-replacement-content")


@st.composite
def _attr_trees(draw, depth: int = 0):
    """Element trees whose elements have, or lack, class / id / style attributes."""
    from lxml.html import Element

    elem = Element(draw(st.sampled_from(["div", "p", "span", "section", "list", "item", "aside", "ol", "ul", "details", "a", "article",
                                         "h1", "footer", "script", "svg", "template"])))
    # in any order: which of two attributes comes first decides what ``@id|@class`` reads
    for attr in draw(st.permutations(_ATTRS)):
        if draw(st.booleans()):
            elem.set(attr, draw(_ATTR_WORDS))
    elem.text = draw(st.sampled_from([None, "text", " "]))
    for child in draw(st.lists(_attr_trees(depth + 1), max_size=0 if depth >= 3 else 3)):
        elem.append(child)
    return elem


@settings(max_examples=100, deadline=None)
@given(tree=_attr_trees())
def test_guarded_regex_xpaths_select_what_upstreams_do(tree):
    # Fix 3 of trafilatura_fix: every rewritten XPath of trafilatura.xpaths selects the very same
    # elements as upstream's, whichever attributes an element has or lacks.
    from lxml import etree, html
    from lxml.etree import XPath
    from trafilatura import xpaths

    from curation.extract import trafilatura_fix

    trafilatura_fix.uninstall()
    root = html.Element("html")
    etree.SubElement(root, "body").append(tree)
    pairs = [(x, XPath(trafilatura_fix.guard_regex_tests(x.path), namespaces={"re": "http://exslt.org/regular-expressions"}))
             for v in vars(xpaths).values() if isinstance(v, list) for x in v if isinstance(x, XPath) and "re:test" in x.path]
    assert len(pairs) >= 15 and all(g.path != x.path for x, g in pairs)
    for upstream, guarded in pairs:
        assert guarded(root) == upstream(root), upstream.path


def test_c_level_class_lookup_gives_every_element_its_class():
    # Fix 4 of trafilatura_fix: the same Python class for every element of real pages.
    from lxml import html

    from curation.extract import trafilatura_fix

    pages = []
    with Extractor(ExtractConfig(sandbox=False)) as ex, open(CC_SAMPLE, "rb") as f:
        pages = [page for _, page in ex.pages(iter_records(f))]
    pages.append("<html><body><form><input name=a><select><option>x</select><textarea>t</textarea><label>l</label></form></body></html>")
    stock, fixed = html.HTMLParser(), html.HTMLParser()
    fixed.set_element_class_lookup(trafilatura_fix._html_class_lookup())
    for page in pages:
        a, b = html.fromstring(page, parser=stock), html.fromstring(page, parser=fixed)
        assert [type(e) for e in a.iter()] == [type(e) for e in b.iter()]
    assert any(type(e).__name__ == "FormElement" for e in html.fromstring(pages[-1], parser=fixed).iter())


@settings(max_examples=100, deadline=None)
@given(tree=_attr_trees())
def test_boilerplate_pruning_with_marks_prunes_what_upstream_does(tree):
    # Fix 5: the matches no other match contains, found through marks, prune the same tree.
    from copy import deepcopy

    from lxml import etree, html
    from trafilatura import htmlprocessing
    from trafilatura.xpaths import OVERALL_DISCARD_XPATH

    from curation.extract import trafilatura_fix

    trafilatura_fix.uninstall()
    root = html.Element("html")
    etree.SubElement(root, "body").append(tree)
    stock = htmlprocessing.prune_unwanted_nodes(deepcopy(root), OVERALL_DISCARD_XPATH, with_backup=True)
    fixed = trafilatura_fix.prune_unwanted_nodes(deepcopy(root), OVERALL_DISCARD_XPATH, with_backup=True)
    assert etree.tostring(fixed) == etree.tostring(stock)
    assert b"trafilatura-fix" not in etree.tostring(fixed)
    tree.set("data-curation-trafilatura-fix", "")  # a page that has the mark already: upstream's way
    stock = htmlprocessing.prune_unwanted_nodes(deepcopy(root), OVERALL_DISCARD_XPATH, with_backup=True)
    assert etree.tostring(trafilatura_fix.prune_unwanted_nodes(deepcopy(root), OVERALL_DISCARD_XPATH, with_backup=True)) == etree.tostring(stock)


def _upstream_xpaths() -> list[tuple[object, object]]:
    """(fix 7's selector, upstream's XPath) for every selector trafilatura_fix installs."""
    from lxml.etree import XPath

    from curation.extract import trafilatura_fix
    from curation.extract.trafilatura_selectors import Selector

    if not trafilatura_fix.install():
        pytest.skip("the fixes apply to trafilatura 2.3.1's code only")
    from importlib import import_module

    from trafilatura import xpaths

    baseline = import_module("trafilatura.baseline")  # the package re-exports a function of that name
    found = [x for v in vars(xpaths).values() if isinstance(v, list) for x in v if isinstance(x, Selector)]
    found.append(baseline.BASIC_CLEAN_XPATH)
    assert len(found) == 8 and all(isinstance(x, Selector) for x in found)
    return [(x, XPath(x.path, namespaces={"re": "http://exslt.org/regular-expressions"})) for x in found]


@settings(max_examples=150, deadline=None)
@given(tree=_attr_trees())
def test_python_selectors_select_what_upstreams_xpaths_do(tree):
    # Fix 7: each attribute-only XPath written as a Python test selects the same elements, in the
    # same order, whichever attributes an element has, lacks, or has first.
    from lxml import etree, html

    root = html.Element("html")
    etree.SubElement(root, "body").append(tree)
    for selector, upstream in _upstream_xpaths():
        for context in (root, tree, etree.ElementTree(root)):
            assert selector(context) == upstream(context), selector.path


def test_python_selectors_select_what_upstream_does_at_every_call_on_real_pages(monkeypatch):
    # Fix 7 where it runs: at every call trafilatura makes while extracting real pages (the raw
    # trees, the cleaned and converted ones, the baseline's), the selector and upstream's XPath
    # return the very same elements; and the pages' texts are what stock trafilatura gives.
    import gzip

    import trafilatura

    from curation.extract import trafilatura_fix
    from curation.extract.html import decode_html
    from curation.extract.trafilatura_selectors import Selector

    upstream = {id(s): x for s, x in _upstream_xpaths()}
    calls: dict[str, int] = {}
    selected = [0]
    plain_call = Selector.__call__

    def checked(self, tree):
        mine = plain_call(self, tree)
        assert mine == upstream[id(self)](tree), self.path
        calls[self.path] = calls.get(self.path, 0) + 1
        selected[0] += len(mine)
        return mine

    # The sample's pages but its three huge archive.org ones (the text test above has them), and
    # a third of the gold set's where ../shared/data has it.
    from conftest import SHARED

    pages = []
    with Extractor(ExtractConfig(sandbox=False)) as ex:
        for path in sorted(glob.glob(str(SAMPLE / "warc" / "*.warc*"))):
            with open(path, "rb") as f:
                pages += [(rec.uri, html) for rec, html in ex.pages(iter_records(f)) if "archive.org/" not in (rec.uri or "")]
    assert len(pages) > 50
    gold = SHARED / "extraction-gold" / "html"
    pages += [(None, decode_html(gzip.open(p).read(), None)[0]) for p in sorted(gold.glob("*.html.gz"))[::3]]

    def texts(**options) -> list[str | None]:
        return [trafilatura.extract(page, url=url, with_metadata=False, deduplicate=False, **options) for url, page in pages]

    stage = {"fast": True, "include_comments": False, "include_tables": False}
    monkeypatch.setattr(Selector, "__call__", checked)
    fixed, fixed_defaults = texts(**stage), texts()
    monkeypatch.setattr(Selector, "__call__", plain_call)
    assert len(calls) == 8 and selected[0] > 1000  # every selector ran, and found things
    trafilatura_fix.uninstall()
    try:
        assert fixed == texts(**stage) and fixed_defaults == texts()
    finally:
        trafilatura_fix.install()


def test_python_selectors_use_upstreams_regular_expressions():
    # Fix 7's patterns are upstream's, character for character (a generated tree cannot try
    # every alternative of a 60-word pattern).
    import re

    from curation.extract import trafilatura_fix, trafilatura_selectors

    ours = {v.__self__.pattern for v in vars(trafilatura_selectors).values() if getattr(v, "__name__", "") == "search"}
    pairs = _upstream_xpaths()
    theirs = {m.group(2) for selector, _ in pairs
              for m in re.finditer(trafilatura_fix._RE_TEST.pattern, selector.path)}
    from trafilatura.settings import _COOKIE_CONSENT_RE  # the baseline's selector takes it from there

    assert len(theirs) >= 10 and theirs - {_COOKIE_CONSENT_RE} <= ours


_TEXTS = st.sampled_from([None, "", "a", "b c", " ", "\n", "x\ty", "zero\u200bwidth", "soft\xadhyphen", "nel\x85line\u2028sep", "ſ ı"])


@st.composite
def _text_trees(draw, depth: int = 0):
    """Trees of block, inline and cleaned elements and comments, with every kind of text and tail."""
    from lxml import etree
    from lxml.html import Element

    if depth and draw(st.integers(0, 5)) == 0:
        node = etree.Comment(draw(st.sampled_from(["c", " x "])))
    else:
        node = Element(draw(st.sampled_from(["div", "p", "span", "b", "li", "ul", "br", "td", "aside", "script", "footer", "a", "body"])))
        for attr in draw(st.permutations(("class", "id"))):
            if draw(st.booleans()):
                node.set(attr, draw(st.sampled_from(["", "footer", "cookie-banner", "main", "x"])))
        node.text = draw(_TEXTS)
        for child in draw(st.lists(_text_trees(depth + 1), max_size=0 if depth >= 4 else 4)):
            node.append(child)
    if depth:
        node.tail = draw(_TEXTS)
    return node


@settings(max_examples=300, deadline=None)
@given(tree=_text_trees(), wrap=st.booleans())
def test_page_text_in_one_walk_is_upstreams(tree, wrap):
    # Fix 8: the page-text measure in one walk gives upstream's string (which copies the tree,
    # deletes the cleaned elements and re-spaces the blocks), whatever is cut, nested or commented.
    from importlib import import_module

    from lxml import etree, html

    from curation.extract import trafilatura_fix

    if not trafilatura_fix.install():
        pytest.skip("the fixes apply to trafilatura 2.3.1's code only")
    if not isinstance(tree.tag, str):
        return
    root = html.Element("html")
    if wrap:
        etree.SubElement(root, "body").append(tree)
    else:
        root = tree
    upstream = import_module("trafilatura.baseline").html2txt
    before = etree.tostring(root)
    assert trafilatura_fix.html2txt(root) == upstream(root)
    assert etree.tostring(root) == before  # the tree is left as it was


def test_page_text_in_one_walk_on_real_pages():
    from importlib import import_module

    from lxml import html

    from curation.extract import trafilatura_fix

    if not trafilatura_fix.install():
        pytest.skip("the fixes apply to trafilatura 2.3.1's code only")
    upstream = import_module("trafilatura.baseline").html2txt
    with Extractor(ExtractConfig(sandbox=False)) as ex:
        pages = []
        for path in sorted(glob.glob(str(SAMPLE / "warc" / "*.warc*"))):
            with open(path, "rb") as f:
                pages += [page for _, page in ex.pages(iter_records(f))]
    trees = [html.fromstring(page) for page in pages]
    texts = [trafilatura_fix.html2txt(t) for t in trees]
    assert texts == [upstream(t) for t in trees] and sum(map(len, texts)) > 1_000_000


_HTML_PIECES = st.sampled_from(["<!DOCTYPE html/>", "<!doctype html>", "<html/>", "<html lang='x' />", "<html>", "<p>a</p>", "\n",
                                "\r\n", "\x00", "\x08", "\x0b", "\x1f", "\t", "\ufffe", "\uffff", "\ufffd", "é", "中", "\ud800", "x" * 50])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_HTML_PIECES, max_size=12))
def test_repairing_a_page_without_invalid_characters_is_upstreams(pieces):
    # Fix 9: the same string as upstream's repair, whether a page has XML-invalid characters or not.
    from trafilatura import utils

    from curation.extract import trafilatura_fix

    if not trafilatura_fix.install():
        pytest.skip("the fixes apply to trafilatura 2.3.1's code only")
    page = "".join(pieces)
    beginning = page[:50].lower()
    assert trafilatura_fix.repair_faulty_html(page, beginning) == trafilatura_fix._upstream_repair(page, beginning)
    assert utils.repair_faulty_html is trafilatura_fix.repair_faulty_html
