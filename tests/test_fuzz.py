"""Malformed input to each stage's reader: every case ends in a counted skip (the stats balance,
the bad record under a named reason) or a clear error naming the file, never an exception.

WARC bytes and HTML go through the extract stage's task function (its real sandboxed
extractor, with and without its pre-pass), and malformed pages through the pre-pass itself; JSONL through the import reader (Dolma) and the SFT/DPO record adapters; Parquet
shards with missing or wrongly typed columns through the dedup, filter and tokenize stages on Ray.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SAMPLE
from warcs import warc_response

FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

REAL_WARC_GZ = (SAMPLE / "warc" / "cc-main-2020-34-sample.warc.gz").read_bytes()
REAL_WARC = (SAMPLE / "warc" / "heritrix-german-literature.warc").read_bytes()


def _extract(tmp_path, data: bytes, name: str, *overrides: str) -> dict:
    from curation.extract import ExtractConfig
    from pipelines import config
    from pipelines.extract import extract_file

    src = tmp_path / name
    src.write_bytes(data)
    out, stats = tmp_path / "out.parquet", tmp_path / "_stats.json"
    for f in (out, stats):
        f.unlink(missing_ok=True)
    cfg = config.load(ExtractConfig, None, list(overrides))
    return extract_file((str(src), str(out), str(stats), dataclasses.asdict(cfg), None, None))


def _counted_or_named(res: dict, path_hint: str) -> None:
    if res["failed_files"]:
        [(path, msg)] = res["failed_files"].items()
        assert path.endswith(path_hint) and msg.strip(), res
    else:
        assert res["input"] == res["output"] + sum(res["dropped"].values()), res


def _mutate(data: bytes, rnd: random.Random, kind: str) -> bytes:
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: rnd.randrange(0, len(b))])
    if kind == "flip":
        for _ in range(rnd.randrange(1, 40)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        return bytes(b)
    if kind == "insert":
        at = rnd.randrange(len(b))
        return bytes(b[:at]) + rnd.randbytes(rnd.randrange(1, 200)) + bytes(b[at:])
    at, n = rnd.randrange(len(b)), rnd.randrange(1, 2000)  # cut a piece out
    return bytes(b[:at] + b[at + n:])


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["truncate", "flip", "insert", "cut"]), gz=st.booleans())
def test_malformed_warc_bytes(tmp_path, seed, kind, gz):
    rnd = random.Random(seed)
    data = _mutate(REAL_WARC_GZ if gz else REAL_WARC[:60_000], rnd, kind)
    name = "bad.warc.gz" if gz else "bad.warc"
    _counted_or_named(_extract(tmp_path, data, name), name)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_as_a_warc_file(tmp_path, raw):
    _counted_or_named(_extract(tmp_path, raw, "junk.warc.gz"), "junk.warc.gz")


_TAGS = st.sampled_from(["<html>", "<body>", "<p>", "</p>", "<div>", "</div>", "<script>", "</script>", "<!--", "-->", "<table><tr><td>",
                         "<meta charset='gb2312'>", "<meta http-equiv='content-type' content='text/html; charset=utf-16'>", "&#x0;", "&nbsp;",
                         "<![CDATA[", "<svg><foreignObject>", "<a href='javascript:x'>", "<title>", "\x00", "\ufeff", "<" * 50, "<b>" * 200])
_HTML = st.lists(st.one_of(_TAGS, st.text(max_size=60)), max_size=80).map("".join)


@FUZZ
@given(html=_HTML, enc=st.sampled_from(["utf-8", "latin-1", "utf-16", "utf-7"]),
       ctype=st.sampled_from([b"text/html", b"text/html; charset=utf-8", b"text/html; charset=nonsense-42", b"text/html; charset=",
                              b"text/html; charset=utf-7"]),
       prefilter=st.booleans())
def test_malformed_html_in_a_response_record(tmp_path, html, enc, ctype, prefilter):
    body = html.encode(enc, errors="replace")
    res = _extract(tmp_path, warc_response(body, ctype), "page.warc.gz", *(["prefilter.enabled=true"] if prefilter else []))
    assert not res["failed_files"], res
    assert res["input"] == res["output"] + sum(res["dropped"].values()) and res["input"] >= 1


# Text that ends up in decoded pages: UTF-7 and broken UTF-16 decode to lone surrogates, which
# the pre-pass's renderer (resiliparse) refuses.
_PAGE_TEXT = st.lists(st.one_of(_TAGS, st.text(max_size=60), st.sampled_from(["\ud800", "\udfff", "\U0001f600", "中文字", "Ελληνικά"])),
                      max_size=80).map("".join)


@settings(max_examples=60, deadline=None)
@given(html=_PAGE_TEXT, languages=st.sampled_from([["en", "zh"], ["en"], []]), min_words=st.sampled_from([0, 5, 50]))
def test_prefilter_verdict_on_malformed_pages(html, languages, min_words):
    """The pre-pass gives a verdict or says it could not render the page (which then goes to
    trafilatura): never another exception."""
    from curation.extract import PrefilterConfig, prefilter

    cfg = PrefilterConfig(enabled=True, languages=languages, min_words=min_words)
    try:
        reason, label = prefilter.check(html, cfg)
    except prefilter.RenderFailed:
        return
    assert reason in (None, "prefilter_short", "prefilter_language")
    assert reason != "prefilter_language" or (label and label not in languages)
    assert reason != "prefilter_short" or min_words > 0


_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
_LINES = st.lists(st.one_of(
    _JSON_VALUES.map(json.dumps),
    st.dictionaries(st.sampled_from(["id", "text", "metadata", "messages", "question", "answer", "chosen", "rejected", "input",
                                     "preferred_output", "non_preferred_output", "instruction", "instances"]), _JSON_VALUES, max_size=5).map(json.dumps),
    st.text(max_size=40),  # not JSON at all
), max_size=20)


@FUZZ
@given(lines=_LINES, gz=st.booleans())
def test_malformed_jsonl_documents_are_counted(tmp_path, lines, gz):
    """The import stage's reader (Dolma/CCNet JSONL) counts every non-blank line as kept or dropped."""
    from curation.stats import StageStats
    from pipelines.import_jsonl import import_file

    raw = ("\n".join(lines) + "\n").encode("utf-8")
    src = tmp_path / ("d.jsonl.gz" if gz else "d.jsonl")
    src.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    shard, stats_path = tmp_path / "d.parquet", tmp_path / "d.json"
    for f in (shard, stats_path):
        f.unlink(missing_ok=True)
    res = StageStats.from_dict(import_file({"path": str(src), "out": str(shard), "stats": str(stats_path)}))
    res.check()
    import io

    # lines as the reader sees them: universal newlines (\n, \r, \r\n), blank ones skipped
    assert res.input == sum(1 for ln in io.StringIO(raw.decode("utf-8"), newline=None) if ln.strip())
    assert pq.read_table(shard).num_rows == res.output


@FUZZ
@given(lines=_LINES)
def test_malformed_chat_and_preference_records(lines):
    """SFT and DPO readers: every record becomes conversations/a pair, or a named drop reason."""
    import io

    from training.chat import conversations_from_record, iter_jsonl_records, pair_from_record

    records = list(iter_jsonl_records(io.BytesIO(("\n".join(lines) + "\n").encode())))
    for rec in records:
        convs, reason = conversations_from_record(rec) if rec is not None else ([], "invalid_json")
        assert convs or reason, rec
        pair, why = pair_from_record(rec) if rec is not None else (None, "invalid_json")
        assert pair is not None or why, rec


# ---- Parquet shards with missing or wrongly typed columns, through whole stages on Ray ----

BAD_SHARDS = {
    "no_text": lambda good: good.drop_columns(["text"]),
    "no_id": lambda good: good.drop_columns(["id"]),
    "text_is_int": lambda good: good.set_column(good.schema.get_field_index("text"), "text", pa.array(range(good.num_rows), pa.int64())),
    "text_is_list": lambda good: good.set_column(good.schema.get_field_index("text"), "text", pa.array([[1, 2]] * good.num_rows)),
    "text_nulls": lambda good: good.set_column(good.schema.get_field_index("text"), "text", pa.array([None] * good.num_rows, pa.string())),
    "only_junk": lambda good: pa.table({"junk": pa.array([1.5] * good.num_rows)}),
}


@pytest.fixture(scope="module")
def bad_parquet_folder(tmp_path_factory):
    from curation.schema import documents_to_table
    from curation.sources import read_dolma_jsonl

    folder = tmp_path_factory.mktemp("badparquet") / "docs"
    folder.mkdir()
    with open(SAMPLE / "text" / "cc_en_head-0091.jsonl.gz", "rb") as f:
        good = documents_to_table(list(read_dolma_jsonl(f, "cc_en_head-0091.jsonl.gz")))
    pq.write_table(good, folder / "good.parquet")
    for name, make in BAD_SHARDS.items():
        pq.write_table(make(good), folder / f"{name}.parquet")
    (folder / "not_parquet.parquet").write_bytes(b"PAR1 this is not a parquet file")
    return folder, good.num_rows


@pytest.mark.parametrize("stage", ["dedup", pytest.param("filter", marks=pytest.mark.slow), pytest.param("tokenize", marks=pytest.mark.slow)])
def test_bad_parquet_shards_are_named_not_fatal(ray_session, bad_parquet_folder, tmp_path, stage):
    from pipelines.cli import main

    folder, n_good = bad_parquet_folder
    out = tmp_path / stage
    if stage == "tokenize":
        tok = tmp_path / "tok"
        assert main(["train-tokenizer", "--input", str(folder / "good.parquet"), "--output", str(tok), "--set", "vocab_size=300"]) == 0
        argv = ["tokenize", "--tokenizer", str(tok), "--input", str(folder), "--output", str(out)]
    elif stage == "filter":
        argv = ["filter", "--input", str(folder), "--output", str(out)]
    else:
        argv = ["dedup", "--input", str(folder), "--output", str(out)]
    rc = main(argv)
    stats = json.loads((out / "stats.json").read_text())
    assert rc == 1, stats  # a bad input makes the stage exit non-zero ...
    failed = {p.rsplit("/", 1)[-1]: msg for p, msg in stats["failed_files"].items()}
    assert "not_parquet.parquet" in failed and "only_junk.parquet" in failed, failed
    for name in ("no_text", "text_is_int", "text_is_list", "only_junk"):
        # ... and names each unreadable shard with a one-line reason, or counts its rows as drops
        assert f"{name}.parquet" in failed or stats["input"] > n_good, (name, failed)
    assert all(msg.splitlines()[0].strip() for msg in failed.values())
    assert "good.parquet" not in failed and stats["input"] == stats["output"] + sum(stats["dropped"].values())


@FUZZ
@given(names=st.lists(st.text(min_size=1, max_size=30).filter(lambda n: "/" not in n and "\x00" not in n and n not in (".", "..")), min_size=1, max_size=8))
def test_shard_names_from_input_paths_stay_inside_the_output_folder(names):
    """Output names derive from input file names (data the user does not control, e.g. a crawl
    listing): joined to the output folder they never leave it."""
    import os

    from pipelines.extract import shard_names
    from pipelines.import_jsonl import unique_names
    from training.prepare import shard_name

    out = "/srv/run/stage"
    paths = ["/in/" + n for n in names]
    for name in [*unique_names(paths), *[shard_name(p) for p in paths]]:
        assert "/" not in name
        assert os.path.dirname(os.path.normpath(os.path.join(out, name + ".parquet"))) == out
    for name in shard_names(paths):
        assert os.path.normpath(os.path.join(out, name + ".parquet")).startswith(out + "/"), name
