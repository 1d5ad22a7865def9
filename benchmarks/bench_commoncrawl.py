"""`make bench-commoncrawl`: reading a Common Crawl WARC through its index (byte ranges of the
records the index selects) against reading it whole with the extractor's pre-pass, side by side.

The input: one WARC file laid out as Common Crawl writes them (warcinfo, then request, response
and metadata records per page, in crawl order), of a mixed-language crawl built from real pages
(in build/bench-commoncrawl/, once):
  - the 181 pages of the extraction gold set (../shared/data/extraction-gold), as they are;
  - the 690 CC-MAIN-2019-30 documents of data/sample/text, each put into the markup of a gold page
    (bench_extract.page_with_text: the page in the document's language, its markup real);
  - the sample WARCs' HTML pages not from archive.org, and their non-HTML answers (images,
    robots.txt, text files);
  English pages of the last two kinds left out (a fixed hash) until about 40% of the pages are
  English or Chinese. Its index is the columnar index's layout (Common Crawl's column names;
  offsets from FastWARC; languages from CLD2 through pycld2 on each HTML payload, as Common Crawl
  labels pages; detected MIME type from the payload's first bytes). Served over loopback HTTP by
  tests/ccserver.py, the same server the tests use.

Runs, each in a fresh process inside a cpuacct cgroup of its own (every process it starts
counts: the extractor's sandbox child too, ../shared/docs/MEASURING.md), alternating over
--repeat rounds, the fastest round counting; each run's start-up (a one-record run of the same
kind) is subtracted for 'net' CPU:
  whole file, pre-pass   the stage's task function on the WARC's URL: streamed whole, every
                         record parsed, the pre-pass (en/zh, the filter's minimum length) before
                         trafilatura (what `pipelines run` does with a dump);
  index, pre-pass        the index read and the selection made (default cc_index settings:
                         en/zh and unlabelled pages, text/html, status 200), then the task
                         function on its byte ranges, same extract options;
  index                  the same without the pre-pass;
  whole file             without the pre-pass: every document, the reference for what each
                         selection keeps.
Figures: bytes fetched (what the server sent) and requests; documents kept, en/zh documents
kept; net CPU per kept en/zh document; bytes and requests per coalescing gap; and how far the
index's languages (CLD2 on the page) agree with the stage's own (lid.176 on the extracted text):
of the documents the filter's language and length rules keep, the share the index selection
would skip; and, for both selections (the index's, the pre-pass's), the share of en/zh
documents they keep, also on the gold set's held-out half (bench_extract.held_out).

    python benchmarks/bench_commoncrawl.py [--repeat 2] [--parts index,stream]

`--parts stream`: the whole-file stream (storage.remote.open_remote) against plain requests and a
local file, with cuts and a 503 injected (a 100 MB WARC).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import io
import json
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

import bench_extract as bx  # noqa: E402  (its page builder, CPU meter and filter rules)

BUILD = REPO / "build" / "bench-commoncrawl"
DUMP = "CC-MAIN-2099-01"
REL = f"crawl-data/{DUMP}/segments/1700000000000.0/warc/mixed-00000.warc.gz"
ONE = f"crawl-data/{DUMP}/segments/1700000000000.1/warc/one-00000.warc.gz"
TARGETS = ("en", "zh")
EN_ZH_SHARE = 0.40
GAPS = (0, 1024, 4096, 16384, 65536, 262144, 1 << 20)
FAST = {"base_url": "", "retries": 5, "backoff_s": 0.05, "timeout_s": 60.0}


# ---------------------------------------------------------------- the crawl

def _pages() -> list[dict]:
    """Every page of the crawl: {seed, url, ctype, body, status, group, language (of its source)}."""
    from urllib.parse import urlsplit

    from curation import langid
    from curation.extract import ExtractConfig, Extractor, iter_records
    from curation.extract.html import decode_html
    from curation.sources import read_dolma_jsonl

    truth = bx.gold_truth()
    keys = sorted(truth)
    pages = [{"seed": "gold:" + k, "url": truth[k].get("url") or f"https://gold.invalid/{k}", "ctype": "text/html",
              "body": gzip.open(bx.GOLD / "html" / f"{k}.html.gz").read(), "status": 200, "group": "gold", "key": k,
              "language": langid.identify(truth[k]["articleBody"])[0]} for k in keys]
    shells = {k: decode_html(gzip.open(bx.GOLD / "html" / f"{k}.html.gz").read(), None)[0] for k in keys}
    docs = []
    for path in sorted((bx.SAMPLE / "text").glob("*.jsonl.gz")):
        with open(path, "rb") as f:
            docs += list(read_dolma_jsonl(f, path.name))
    for i, d in enumerate(docs):
        k = keys[i % len(keys)]
        pages.append({"seed": f"cc-text:{d['id']}", "url": d["url"] or f"https://text.invalid/{d['id']}", "ctype": "text/html; charset=utf-8",
                      "body": bx.page_with_text(shells[k], truth[k]["articleBody"], d["text"]).encode(), "status": 200,
                      "group": "text", "language": langid.identify(d["text"])[0]})
    with Extractor(ExtractConfig(sandbox=False)) as ex:
        for path in bx._sample_files():
            with open(path, "rb") as f:
                for rec in iter_records(f):
                    archive_org_page = (urlsplit(rec.uri or "").hostname or "").endswith("archive.org") and "html" in (rec.content_type or "")
                    if rec.kind != "response" or rec.status != 200 or archive_org_page:
                        continue
                    ctype = (rec.content_type or "application/octet-stream") + (f"; charset={rec.charset}" if rec.charset else "")
                    html = next(iter(ex.pages([rec])), None)
                    pages.append({"seed": f"sample:{rec.record_id}", "url": rec.uri, "ctype": ctype, "body": rec.body, "status": 200,
                                  "group": "sample" if html else "other", "language": langid.identify(html[1][:4000])[0] if html else None})
    return pages


def _mix(pages: list[dict]) -> list[dict]:
    """English pages of the text and sample groups dropped (by a hash of their seed) until en/zh
    pages are EN_ZH_SHARE of the HTML pages; then the crawl order (a hash, as fetch times mix hosts)."""
    html = [p for p in pages if p["group"] != "other"]
    targets = [p for p in html if p["language"] in TARGETS]
    others = len(html) - len(targets)
    want = round(others * EN_ZH_SHARE / (1 - EN_ZH_SHARE))
    droppable = sorted((p for p in targets if p["group"] in ("text", "sample") and p["language"] == "en"),
                       key=lambda p: hashlib.blake2b(p["seed"].encode(), digest_size=8).digest())
    drop = {p["seed"] for p in droppable[: max(0, len(targets) - want)]}
    kept = [p for p in pages if p["seed"] not in drop]
    return sorted(kept, key=lambda p: hashlib.blake2b(("order:" + p["seed"]).encode(), digest_size=8).digest())


def _write_warc(path: Path, pages: list[dict]) -> None:
    """Common Crawl's layout: a warcinfo record, then request, response and metadata per page."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from ccserver import cld2_languages

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        w = WARCWriter(f, gzip=True)
        info = w.create_warcinfo_record(path.name, {"isPartOf": DUMP, "software": "bench-commoncrawl", "operator": "none",
                                                     "format": "WARC File Format 1.1", "description": "a mixed-language crawl of real pages"})
        w.write_record(info)
        for i, p in enumerate(pages):
            date = f"2099-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
            rid = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, p['seed'])}>"
            host = p["url"].split("/")[2] if "://" in p["url"] else "invalid"
            req = StatusAndHeaders(f"GET /{p['url'].split('/', 3)[3] if p['url'].count('/') >= 3 else ''} HTTP/1.1",
                                   [("Host", host), ("User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"), ("Accept", "text/html")],
                                   is_http_request=True)
            w.write_record(w.create_warc_record(p["url"], "request", http_headers=req, warc_headers_dict={"WARC-Date": date}))
            http = StatusAndHeaders(f"{p['status']} OK", [("Content-Type", p["ctype"]), ("Content-Length", str(len(p["body"])))], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(p["url"], "response", payload=io.BytesIO(p["body"]), http_headers=http,
                                                warc_headers_dict={"WARC-Date": date, "WARC-Record-ID": rid}))
            meta = f"fetchTimeMs: {50 + i % 400}\r\n"
            if "html" in p["ctype"]:
                charset = p["ctype"].partition("charset=")[2] or None
                meta += f"languages-cld2: {json.dumps({'languages': (cld2_languages(p['body'], charset) or '').split(',')})}\r\n"
            w.write_record(w.create_warc_record(p["url"], "metadata", payload=io.BytesIO(meta.encode()),
                                                warc_content_type="application/warc-fields", warc_headers_dict={"WARC-Date": date}))
    tmp.rename(path)


def build() -> dict:
    """The crawl, its index and a one-record crawl (for start-up), built once; what they hold."""
    import pyarrow.parquet as pq
    from fastwarc.warc import ArchiveIterator

    from ccserver import index_table

    meta_path = BUILD / "crawl.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    pages = _mix(_pages())
    _write_warc(BUILD / REL, pages)
    _write_warc(BUILD / ONE, [p for p in pages if p["group"] == "gold"][:1])
    for rel, name in ((REL, "index"), (ONE, "index-one")):
        folder = BUILD / name / f"crawl={DUMP}" / "subset=warc"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(index_table([(BUILD / rel, rel)]), folder / "part-00000.parquet")
    offsets = {}
    with open(BUILD / REL, "rb") as f:
        for r in ArchiveIterator(f):
            if r.headers.get("WARC-Record-ID") and str(r.record_type).endswith("response"):
                offsets[r.headers["WARC-Record-ID"]] = r.stream_pos
    meta = {"pages": [{k: p[k] for k in ("seed", "group", "language")} | {"key": p.get("key"), "offset": offsets[f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, p['seed'])}>"],
                                                                          "record_id": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, p['seed'])}>"}
                       for p in pages], "size": (BUILD / REL).stat().st_size, "labels": "CLD2 (pycld2) on each HTML payload"}
    meta_path.write_text(json.dumps(meta))
    return meta


# ---------------------------------------------------------------- measured workers

def worker(spec: dict) -> dict:
    """One run in this process: the stage's task function on the whole file or on the ranges the index selects."""
    from curation.extract import ExtractConfig
    from curation.sources import commoncrawl as cc
    from pipelines import config, extract

    cfg = config.load(ExtractConfig, None, spec["overrides"])
    cc_cfg = {**FAST, "base_url": spec["base_url"]}
    out = spec["out"]
    url = spec["base_url"] + spec["rel"]
    if spec["kind"] == "whole":
        stats = extract.extract_file((url, f"{out}/data/w.parquet", f"{out}/_stats/w.json", dataclasses.asdict(cfg), None, cc_cfg))
    else:
        sel = cc.read_index([spec["index"]], cfg.cc_index)
        unit = {"name": "w", "path": url, "out": f"{out}/data/w.parquet", "stats": f"{out}/_stats/w.json", "ranges": sel.files[spec["rel"]]}
        stats = extract.extract_file(unit, {"cfg": dataclasses.asdict(cfg), "dump": None, "cc": cc_cfg})
    inside = Counter()
    for ex in extract._EXTRACTORS.values():
        inside.update(ex.cpu_s)  # the sandbox child's own CPU in the pre-pass and in trafilatura
        ex.close()  # reap the sandbox child, so its CPU is in the count
    assert not stats["failed_files"], stats["failed_files"]
    return {**stats, "inside": dict(inside)}


RUNS = {
    "whole file, pre-pass": ("whole", ["prefilter.enabled=true"]),
    "index, pre-pass": ("index", ["prefilter.enabled=true"]),
    "index": ("index", []),
    "whole file": ("whole", []),
}


def part_index(meta: dict, repeat: int) -> dict:
    import pyarrow.parquet as pq

    from ccserver import serve
    from curation.sources import commoncrawl as cc

    meter = bx.CPUMeter()
    best: dict[str, dict] = {}
    with serve(BUILD) as server, tempfile.TemporaryDirectory(prefix="bench-cc-") as tmp:
        for r in range(repeat):
            t0 = time.perf_counter()
            for label, (kind, overrides) in RUNS.items():
                figures = {}
                for which, rel, index in (("one", ONE, BUILD / "index-one"), ("run", REL, BUILD / "index")):
                    out = Path(tmp) / f"{r}-{label}-{which}".replace(" ", "_").replace(",", "")
                    server.reset()
                    spec = {"kind": kind, "overrides": overrides, "out": str(out), "base_url": server.base_url, "rel": rel, "index": str(index)}
                    cpu, out_text = meter.run([sys.executable, __file__, "--worker", json.dumps(spec)])
                    figures[which] = {"cpu": cpu, "stats": bx.worker_result(out_text), "bytes": server.bytes_sent,
                                      "requests": len(server.requests), "out": str(out)}
                run = {"cpu": figures["run"]["cpu"], "net": figures["run"]["cpu"] - figures["one"]["cpu"], **{k: figures["run"][k] for k in ("stats", "bytes", "requests")}}
                if label not in best or run["net"] < best[label]["net"]:
                    dest = BUILD / "runs" / label.replace(" ", "_").replace(",", "")
                    shutil.rmtree(dest, ignore_errors=True)
                    shutil.copytree(figures["run"]["out"], dest)
                    best[label] = {**run, "docs": pq.read_table(dest / "data" / "w.parquet", columns=["id", "text", "language", "language_score", "metadata"]).to_pylist()}
            print(f"  round {r + 1}/{repeat}: {len(RUNS) * 2} runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    sel = cc.read_index([str(BUILD / "index")], cc.CCIndexConfig())
    return {"best": best, "selection": sel, "method": meter.method}


def report_index(meta: dict, res: dict) -> dict:
    from curation.sources import commoncrawl as cc

    best, sel = res["best"], res["selection"]
    html = [p for p in meta["pages"] if p["group"] != "other"]
    mix = Counter(p["language"] for p in html)
    print(f"\ncrawl: 1 WARC, {meta['size'] / 1e6:.1f} MB, {len(meta['pages'])} responses ({len(html)} HTML pages: "
          + ", ".join(f"{k} {v}" for k, v in mix.most_common(8)) + f", ...; en/zh {sum(mix[t] for t in TARGETS) / len(html):.0%} by the source's language)")
    print(f"index languages: {meta['labels']}; CPU: {res['method']}, fastest round of each; net = less a one-record run of the same kind")
    print(f"\n  {'run':<24} {'MB fetched':>10} {'requests':>9} {'docs':>6} {'en/zh':>6} {'CPU s':>7} {'net s':>7} {'ms/en-zh doc':>13}"
          f" {'trafilatura s':>14} {'pre-pass s':>11}")
    figures: dict = {"runs": {}}
    for label, b in best.items():
        kept = sum(1 for d in b["docs"] if d["language"] in TARGETS)
        per = b["net"] / max(1, kept) * 1e3
        inside = b["stats"]["inside"]
        figures["runs"][label] = {"bytes": b["bytes"], "requests": b["requests"], "docs": len(b["docs"]), "en_zh_docs": kept,
                                  "cpu_s": round(b["cpu"], 3), "net_cpu_s": round(b["net"], 3), "ms_per_en_zh_doc": round(per, 2),
                                  "trafilatura_cpu_s": round(inside["extractor"], 3), "prepass_cpu_s": round(inside["prefilter"], 3)}
        print(f"  {label:<24} {b['bytes'] / 1e6:>10.2f} {b['requests']:>9} {len(b['docs']):>6} {kept:>6} {b['cpu']:>7.2f} {b['net']:>7.2f} {per:>13.2f}"
              f" {inside['extractor']:>14.2f} {inside['prefilter']:>11.2f}")
    w, i = figures["runs"]["whole file, pre-pass"], figures["runs"]["index, pre-pass"]
    bytes_ratio = w["bytes"] / i["bytes"]
    cpu_ratio = w["ms_per_en_zh_doc"] / i["ms_per_en_zh_doc"]
    cpu_ratio_no_pre = w["ms_per_en_zh_doc"] / figures["runs"]["index"]["ms_per_en_zh_doc"]
    print(f"\nindex path vs whole file with the pre-pass (same extract options): {bytes_ratio:.2f}x fewer bytes, "
          f"{cpu_ratio:.2f}x less CPU per kept en/zh document; index path without the pre-pass: {cpu_ratio_no_pre:.2f}x")
    figures.update(bytes_ratio=round(bytes_ratio, 2), cpu_per_en_zh_doc_ratio=round(cpu_ratio, 2), cpu_ratio_index_without_prepass=round(cpu_ratio_no_pre, 2))
    # What the index can save: the work outside trafilatura on the pages it leaves out.
    outside = {k: figures["runs"][k]["net_cpu_s"] - figures["runs"][k]["trafilatura_cpu_s"] for k in ("whole file, pre-pass", "index, pre-pass")}
    print(f"  CPU outside trafilatura (net): whole file, pre-pass {outside['whole file, pre-pass']:.2f} s, index, pre-pass "
          f"{outside['index, pre-pass']:.2f} s; trafilatura itself {w['trafilatura_cpu_s']:.2f} s vs {i['trafilatura_cpu_s']:.2f} s (the same pages)")

    # Coalescing: bytes and requests per gap.
    print(f"\ncoalescing ({sel.records} selected records, {sel.record_bytes / 1e6:.2f} MB of them; the whole file {meta['size'] / 1e6:.2f} MB in 1 request):")
    print(f"  {'gap':>8} {'MB':>8} {'requests':>9} {'x whole':>8}")
    figures["gaps"] = {}
    for gap in GAPS:
        b, n = cc.fetch_plan(sel, cc.CCIndexConfig(gap=gap))
        figures["gaps"][gap] = {"bytes": b, "requests": n}
        mark = "  <- default" if gap == cc.CCIndexConfig().gap else ""
        print(f"  {gap:>8} {b / 1e6:>8.2f} {n:>9} {meta['size'] / b:>8.2f}{mark}")

    # What each selection keeps of what the full path gives.
    by_offset = {p["offset"]: p for p in meta["pages"]}
    selected = {by_offset[o]["record_id"] for o, _ in sel.files[REL] if o in by_offset}
    full = {d["metadata"]["warc_record_id"]: d for d in best["whole file"]["docs"]}
    pre = {d["metadata"]["warc_record_id"] for d in best["whole file, pre-pass"]["docs"]}
    en_zh = {rid for rid, d in full.items() if d["language"] in TARGETS}
    keepable = {rid for rid, d in full.items() if bx.filter_keeps(d["text"], d["language"], d["language_score"])}
    gold = {p["record_id"]: p["key"] for p in meta["pages"] if p["group"] == "gold"}
    held = {rid for rid, k in gold.items() if bx.held_out(k)}
    skipped = keepable - selected
    print(f"\nagreement of the index's languages (CLD2 on the page) with the stage's (lid.176 on the extracted text): of the {len(keepable)} "
          f"documents the filter's language and length rules keep, the index selection skips {len(skipped)} = {len(skipped) / max(1, len(keepable)):.2%}")
    figures["filter_kept_skipped_by_index"] = {"documents": len(keepable), "skipped": len(skipped), "share": round(len(skipped) / max(1, len(keepable)), 4)}
    figures["keeps"] = {}
    primary = cc.read_index([str(BUILD / "index")], dataclasses.replace(cc.CCIndexConfig(), primary_language_only=not cc.CCIndexConfig().primary_language_only))
    other_mode = {by_offset[o]["record_id"] for o, _ in primary.files[REL] if o in by_offset}
    other_name = "index, primary only" if not cc.CCIndexConfig().primary_language_only else "index, any language"
    b_other, n_other = cc.fetch_plan(primary, cc.CCIndexConfig())
    print(f"  ({other_name}: {primary.records} records, {b_other / 1e6:.2f} MB in {n_other} requests: {meta['size'] / b_other:.2f}x fewer bytes than the whole file)")
    figures["other_language_mode"] = {"name": other_name, "records": primary.records, "bytes": b_other, "requests": n_other}
    for name, chosen in (("index selection", selected), (other_name, other_mode), ("pre-pass", pre)):
        row = {}
        for subset, ids in (("en/zh documents", en_zh), ("filter-kept documents", keepable), ("en/zh, gold held-out half", en_zh & held)):
            row[subset] = {"of": len(ids), "kept": len(ids & chosen), "share": round(len(ids & chosen) / max(1, len(ids)), 4)}
        figures["keeps"][name] = row
        print(f"  {name:<16} keeps " + "; ".join(f"{v['kept']}/{v['of']} = {v['share']:.3f} of the {k}" for k, v in row.items()))
        for rid in sorted(en_zh - chosen)[:6]:
            d = full[rid]
            print(f"      lost: {d['language']} {d['language_score']:.2f} {len(d['text'].split()):>5} words {d['text'][:70]!r}")
    return figures


# ---------------------------------------------------------------- the whole-file stream

def part_stream() -> dict:
    """open_remote against plain requests and a local file on a 100 MB WARC, with cuts and a 503."""
    import requests
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    from ccserver import serve
    from storage.remote import open_remote

    import logging

    logging.getLogger("storage.remote").setLevel(logging.ERROR)  # the injected faults' retries are counted below
    root = BUILD / "stream"
    root.mkdir(parents=True, exist_ok=True)
    big = root / "big.warc.gz"
    if not big.exists():
        big.write_bytes((bx.SAMPLE / "warc" / "heritrix-2008-archive-org.warc.gz").read_bytes() * 40)
    size, ch = big.stat().st_size, 1 << 16
    with serve(root) as server:
        url = server.base_url + "big.warc.gz"

        def timed(fn, reps=3):
            best = None
            for _ in range(reps):
                server.reset()
                t = time.perf_counter()
                out = fn()
                dt = time.perf_counter() - t
                best = dt if best is None or dt < best else best
            return best, out

        def digest(chunks):
            h = hashlib.sha256()
            for c in chunks:
                h.update(c)
            return h.hexdigest()

        def local():
            with open(big, "rb") as f:
                return digest(iter(lambda: f.read(ch), b""))

        def plain():
            with requests.get(url, stream=True) as r:
                return digest(r.iter_content(ch))

        def remote(faults=()):
            def go():
                server.faults["/big.warc.gz"] = list(faults)
                with open_remote(url, retries=5, backoff_s=0.0) as f:
                    return digest(iter(lambda: f.read(ch), b"")), f.retry_count
            return go

        def records(opener):
            with opener() as f:
                return sum(1 for r in ArchiveIterator(f, record_types=WarcRecordType.response) if r.reader.read() is not None)

        mb = size / 1e6
        t_local, d_local = timed(local)
        t_plain, d_plain = timed(plain)
        t_remote, (d_remote, _) = timed(remote())
        t_cut, (d_cut, retries) = timed(remote(["drop:10000000", "drop:30000000", "503", "403", "drop:20000000"]))
        assert d_local == d_plain == d_remote == d_cut
        t_fl, n_fl = timed(lambda: records(lambda: open(big, "rb")))
        t_fr, n_fr = timed(lambda: records(lambda: open_remote(url)))
        assert n_fl == n_fr
    print(f"\n== the whole-file stream: {mb:.1f} MB (heritrix-2008 WARC x40), 64 KiB reads, best of 3 ==")
    print(f"  local file read            {mb / t_local:8.0f} MB/s")
    print(f"  requests iter_content      {mb / t_plain:8.0f} MB/s")
    print(f"  open_remote                {mb / t_remote:8.0f} MB/s   ratio to plain requests {t_plain / t_remote:.2f}")
    print(f"  open_remote, 3 cuts + 503 + 403 {mb / t_cut:8.0f} MB/s   retries={retries}, sha256 identical")
    print(f"  FastWARC over local file   {n_fl / t_fl:8.0f} responses/s ({n_fl} responses)")
    print(f"  FastWARC over open_remote  {n_fr / t_fr:8.0f} responses/s   ratio {t_fl / t_fr:.2f}")
    return {"mb": round(mb, 1), "local_mb_s": round(mb / t_local), "requests_mb_s": round(mb / t_plain), "open_remote_mb_s": round(mb / t_remote),
            "open_remote_with_faults_mb_s": round(mb / t_cut), "retries": retries, "fastwarc_ratio_local_to_remote": round(t_fl / t_fr, 2)}


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still removes the cgroups (finally blocks)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="rounds of every run, alternating; the fastest of each counts")
    ap.add_argument("--parts", default="index,stream", help="comma-separated: index, stream")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))))
        return
    from benchmarks.results import record

    parts = set(args.parts.split(","))
    figures: dict = {}
    headline = None
    if "index" in parts:
        if not bx.GOLD.exists():
            sys.exit(f"bench-commoncrawl needs the extraction gold set at {bx.GOLD}")
        meta = build()
        figures["index"] = report_index(meta, part_index(meta, args.repeat))
        f = figures["index"]
        headline = {"stage": "extract --cc-index (byte ranges of the records the index selects)",
                    "figure": f"{f['bytes_ratio']}x fewer bytes, {f['cpu_per_en_zh_doc_ratio']}x less CPU per kept en/zh document",
                    "peer": "the same WARC read whole, with the pre-pass", "ratio": f["cpu_per_en_zh_doc_ratio"], "unit": "x"}
    if "stream" in parts:
        figures["stream"] = part_stream()
    record("commoncrawl", figures, headline=headline)


if __name__ == "__main__":
    main()
