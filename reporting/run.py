"""``pipelines run``'s report: ``<run>/report.json`` (every figure) and ``<run>/report.html`` (one
self-contained page, PNG plots embedded as base64).

It only reads what the stages wrote: each stage's ``stats.json`` (documents in/out, drops by
reason, failed inputs), ``_run/<stage>.json`` (wall time and the Ray nodes of its tasks, written
by the run), dedup-stats' ``report.json``, PNGs and cluster samples, the filter's drop table, remix's
``manifest.json`` (with rehydration by cluster size), the tokenizer's and tokenize's counts
(compression in bytes per token), the training runs' ``log.jsonl`` (loss curves), what
decontamination removed (filter, SFT, DPO), the GSM8K score after each training stage
(``eval/stats.json``) and the final answer.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from reporting.html import img as _img
from reporting.html import page, table as _table
from reporting.plots import b64, png, pyplot
from storage import io

CURATION = ("import", "extract", "dedup", "filter", "remix", "train-tokenizer", "tokenize")
TRAINING = ("pretrain", "sft", "dpo")
# GSM8K accuracy below which a small model's score is "about zero" in the report's words.
ABOUT_ZERO = 0.02


def _read(path: str) -> Any:
    return io.read_json(path) if io.exists(path) else None


def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or math.isfinite(x) else None


def build(cfg: Any, paths: dict[str, str], stages: list[str]) -> dict[str, Any]:
    """Everything report.json holds (plain JSON types)."""
    rep: dict[str, Any] = {"output": cfg.output, "stages": [], "artifacts": {}}
    for stage in [s for s in (*CURATION, *TRAINING, "eval") if s in stages]:
        stats = _read(io.join(paths[stage], "stats.json"))
        runlog = _read(io.join(paths["runlog"], f"{stage}.json")) or {}
        if stats is None:
            rep["stages"].append({"stage": stage, "complete": False})
            continue
        seconds = _finite(runlog.get("seconds"))
        row = {
            "stage": stage, "complete": True, "documents_in": stats.get("input"), "documents_out": stats.get("output"),
            "dropped": stats.get("dropped", {}), "failed_inputs": stats.get("failed_files", {}),
            "seconds": seconds, "documents_per_s": (stats.get("input") or 0) / seconds if seconds else None,
            "task_nodes": runlog.get("task_nodes"), "counters": stats.get("counters", {}),
        }
        if stage in TRAINING:
            row["unit"] = "sequences" if stage == "pretrain" else ("conversations" if stage == "sft" else "pairs")
        elif stage == "eval":
            row["unit"] = "questions"
        rep["stages"].append(row)
        rep["artifacts"][stage] = paths[stage]
    nodes = sorted({n for r in rep["stages"] for ns in (r.get("task_nodes") or {}).values() for n in ns})
    rep["ray_nodes_used"] = nodes or None

    dstats = _read(io.join(paths["dedup-stats"], "report.json"))
    if dstats is not None:
        rep["dedup"] = dstats
        rep["artifacts"]["dedup-stats"] = paths["dedup-stats"]
    fstats = _read(io.join(paths["filter"], "stats.json"))
    if fstats is not None:
        rep["filter"] = {"input": fstats.get("input"), "output": fstats.get("output"), "dropped": fstats.get("dropped", {}),
                         "drops_by_language": fstats.get("drops_by_language"), "quality_cut": fstats.get("quality_cut")}
    manifest = _read(io.join(paths["remix"], "manifest.json"))
    if manifest is not None:
        rep["mixture"] = {k: v for k, v in manifest.items() if k != "shards"}
    rep["tokenizer"] = _tokenizer(paths)
    rep["training"] = {s: _training(paths[s]) for s in TRAINING if s in stages and io.exists(paths[s])}
    decont = {s: (_read(io.join(paths[s], "stats.json")) or {}).get("decontamination") for s in ("filter", "sft", "dpo") if s in stages}
    if any(decont.values()):
        rep["decontamination"] = {s: d for s, d in decont.items() if d}
    ev = _read(io.join(paths["eval"], "stats.json")) if "eval" in paths else None
    if ev is not None:
        rep["benchmark"] = {"gsm8k": ev.get("gsm8k", {})}
        rep["artifacts"]["eval"] = paths["eval"]
    answer = _read(paths["generate"])
    if answer is not None:
        rep["answer"] = answer
        rep["artifacts"]["answer"] = paths["generate"]
    rep["artifacts"]["report.json"] = io.join(cfg.output, "report.json")
    rep["artifacts"]["report.html"] = io.join(cfg.output, "report.html")
    return rep


def _tokenizer(paths: dict[str, str]) -> dict[str, Any] | None:
    tstats = _read(io.join(paths["train-tokenizer"], "stats.json"))
    kstats = _read(io.join(paths["tokenize"], "stats.json"))
    if tstats is None and kstats is None:
        return None
    out: dict[str, Any] = {}
    if tstats:
        out["vocab_size"] = tstats.get("vocab_size")
        out["training"] = tstats.get("training")
    if kstats:
        c = kstats.get("counters", {})
        tokens, nbytes = c.get("tokens"), c.get("text_bytes")  # the tokenize stage's counters
        out["tokens"], out["text_bytes"] = tokens, nbytes
        out["bytes_per_token"] = nbytes / tokens if tokens and nbytes else None
        out["counters"] = c
    return out


def _training(run_dir: str) -> dict[str, Any]:
    steps, val = {}, {}
    log = io.join(run_dir, "log.jsonl")
    if io.exists(log):
        with io.open_input(log) as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: the later records win
                if not isinstance(rec, dict) or "step" not in rec:
                    continue
                if rec.get("val_loss") is not None:
                    val[rec["step"]] = rec["val_loss"]
                elif rec.get("loss") is not None:
                    steps[rec["step"]] = rec["loss"]
    stats = _read(io.join(run_dir, "stats.json")) or {}
    summary = stats.get("summary") or stats.get("sft") or stats.get("dpo") or {}
    return {
        "loss": [[s, steps[s]] for s in sorted(steps)], "val_loss": [[s, val[s]] for s in sorted(val)],
        "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None},
    }


# ---- plots ----

def _plots(rep: dict[str, Any], paths: dict[str, str]) -> dict[str, str]:
    plt = pyplot()
    out: dict[str, str] = {}
    curves = {k: v for k, v in (rep.get("training") or {}).items() if v["loss"]}
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
        for ax, (name, tr) in zip(axes[0], curves.items()):
            ax.plot([s for s, _ in tr["loss"]], [v for _, v in tr["loss"]], label="train", linewidth=1)
            if tr["val_loss"]:
                ax.plot([s for s, _ in tr["val_loss"]], [v for _, v in tr["val_loss"]], "o-", label="held out")
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.legend()
        out["loss"] = b64(png(fig, dpi=90))
    shares = _mixture_shares(rep.get("mixture") or {})
    if shares:
        names = sorted(shares)
        fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names)), 3.2))
        xs = range(len(names))
        ax.bar([x - 0.27 for x in xs], [shares[n]["before"] for n in names], 0.27, label="before")
        ax.bar(list(xs), [shares[n]["target"] or 0 for n in names], 0.27, label="target")
        ax.bar([x + 0.27 for x in xs], [shares[n]["after"] for n in names], 0.27, label="after remix")
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
        ax.set_ylabel(f"share of {(rep.get('mixture') or {}).get('unit', 'bytes')}")
        ax.legend()
        out["mixture"] = b64(png(fig, dpi=90))
    stages = [r for r in rep["stages"] if r.get("complete") and r["stage"] in CURATION and r.get("documents_in")]
    if stages:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar([r["stage"] for r in stages], [r["documents_out"] for r in stages])
        ax.set_ylabel("documents out")
        ax.tick_params(axis="x", rotation=30)
        out["documents"] = b64(png(fig, dpi=90))
    # dedup-stats' own PNGs (its k-dump curve and friends)
    folder = paths["dedup-stats"]
    for name in io.listdir(folder):
        if name.endswith(".png"):
            with io.open_input(io.join(folder, name)) as f:
                out["dedup: " + name[:-4]] = b64(f.read())
    return out


def _mixture_shares(mix: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per domain: share before remixing, target share, share after (in remix's unit)."""
    domains = mix.get("domains")
    if not isinstance(domains, dict) or not domains:
        return {}
    unit = "documents" if mix.get("unit") == "documents" else "bytes"
    before = {n: float(d.get(f"{unit}_before") or 0) for n, d in domains.items()}
    after = {n: float(d.get(f"{unit}_after") or 0) for n, d in domains.items()}
    tb, ta = sum(before.values()) or 1.0, sum(after.values()) or 1.0
    return {n: {"before": before[n] / tb, "target": domains[n].get("target_share"), "after": after[n] / ta} for n in domains}


# ---- HTML ----

def render_html(rep: dict[str, Any], plots: dict[str, str], dedup_samples: str = "") -> str:
    parts = [f"<h1>Pipeline run: {html.escape(rep['output'])}</h1>"]
    if rep.get("answer"):
        a = rep["answer"]
        parts.append(f"<h2>The final model answers</h2><p><b>prompt:</b> {html.escape(a['prompt'])}</p><pre>{html.escape(a['answer'])}</pre>")
    rows = [[r["stage"], r.get("documents_in"), r.get("documents_out"),
             ", ".join(f"{k}: {v:,}" for k, v in sorted(r.get("dropped", {}).items(), key=lambda kv: -kv[1])),
             len(r.get("failed_inputs") or {}), r.get("seconds"), r.get("documents_per_s")] if r.get("complete") else
            [r["stage"], "not complete", "", "", "", "", ""] for r in rep["stages"]]
    parts.append("<h2>Stages</h2>" + _table(["stage", "in", "out", "dropped by reason", "failed inputs", "seconds", "in per s"], rows))
    parts.append("<p>Training stages count sequences (pre-training), conversations (SFT) or pairs (DPO); eval counts GSM8K questions.</p>")
    if rep.get("ray_nodes_used"):
        parts.append(f"<p>Ray nodes that ran tasks: {len(rep['ray_nodes_used'])} ({html.escape(', '.join(n[:12] for n in rep['ray_nodes_used']))})</p>")
    if "documents" in plots:
        parts.append(_img(plots["documents"], "documents after each stage"))
    if rep.get("dedup"):
        d = rep["dedup"]
        parts.append("<h2>Deduplication</h2>")
        if isinstance(d.get("totals"), dict):
            parts.append(_table(["figure", "value"], [[k, v] for k, v in d["totals"].items()]))
        if isinstance(d.get("per_dump"), dict):
            rows = [[dump, *(v.values() if isinstance(v, dict) else [v])] for dump, v in d["per_dump"].items()]
            first = next(iter(d["per_dump"].values()), {})
            parts.append(_table(["dump", *(first.keys() if isinstance(first, dict) else ["value"])], rows))
        if isinstance(d.get("chain_check"), dict):  # removals checked against their kept document
            parts.append(_table(["chain check", "value"], [[k, v] for k, v in d["chain_check"].items()]))
        if isinstance(d.get("cluster_sizes"), dict) and d["cluster_sizes"]:
            parts.append(_table(["cluster size (every generation)", "clusters"], [[k, v] for k, v in d["cluster_sizes"].items()]))
        curve = d.get("k_dump_curve")
        if isinstance(curve, list) and curve and isinstance(curve[0], dict):
            keys = list(curve[0])
            parts.append(_table(keys, [[p.get(k) for k in keys] for p in curve]))
        for name, data in plots.items():
            if name.startswith("dedup: "):
                parts.append(_img(data, name))
        parts.append(dedup_samples)
    if rep.get("filter"):
        f = rep["filter"]
        rows = [[k, v, f"{100 * v / f['input']:.1f}%" if f.get("input") else ""] for k, v in sorted(f["dropped"].items(), key=lambda kv: -kv[1])]
        parts.append("<h2>Quality filter: drops by rule</h2>" + _table(["rule", "documents", "of input"], rows))
        if f.get("drops_by_language"):
            langs = f["drops_by_language"]
            parts.append(_table(["language", "drops"], [[k, v] for k, v in langs.items()]))
    if rep.get("mixture"):
        m = rep["mixture"]
        parts.append("<h2>Mixture before and after remixing</h2>")
        shares = _mixture_shares(m)
        if shares:
            d = m["domains"]
            rows = [[n, d[n].get("documents_before"), d[n].get("documents_after"), f"{100 * shares[n]['before']:.1f}%",
                     f"{100 * (shares[n]['target'] or 0):.1f}%", f"{100 * shares[n]['after']:.1f}%", d[n].get("epochs")] for n in sorted(d)]
            parts.append(_table(["domain", "documents before", "documents after", "share before", "target", "share after", "epochs"], rows))
        parts.append(_table(["figure", "value"], [[k, v] for k, v in m.items() if not isinstance(v, (dict, list))]))
        if "mixture" in plots:
            parts.append(_img(plots["mixture"], "domain shares"))
        parts.append(_rehydration_html(m.get("rehydration")))
    if rep.get("decontamination"):
        parts.append(_decontamination_html(rep["decontamination"]))
    if rep.get("tokenizer"):
        t = rep["tokenizer"]
        parts.append("<h2>Tokenizer</h2>" + _table(["figure", "value"], [["vocabulary (incl. specials)", t.get("vocab_size")],
                                                                       ["tokens", t.get("tokens")], ["text bytes", t.get("text_bytes")],
                                                                       ["bytes per token (compression)", t.get("bytes_per_token")]]))
    if rep.get("training"):
        parts.append("<h2>Training</h2>")
        if "loss" in plots:
            parts.append(_img(plots["loss"], "loss curves"))
        for name, tr in rep["training"].items():
            parts.append(f"<h3>{name}</h3>" + _table(["figure", "value"], [[k, v] for k, v in tr["summary"].items()]))
    if rep.get("benchmark", {}).get("gsm8k"):
        parts.append(_benchmark_html(rep["benchmark"]["gsm8k"]))
    parts.append("<h2>Artifacts</h2>" + _table(["what", "where"], [[k, v] for k, v in rep["artifacts"].items()]))
    return page("pipeline report", parts)


def _rehydration_html(r: dict[str, Any] | None) -> str:
    if not r or not r.get("by_cluster_size"):
        return ""
    head = ("<h3>Rehydration by duplicate-cluster size</h3><p>" + ("On (FineWeb-2's weights): a document of a larger cluster is written more often."
            if r.get("enabled") else "Off (<code>--set rehydrate=true</code> turns it on): copies per document by the size of the cluster dedup kept it from.")
            + "</p>")
    rows = [[k, v.get("weight"), v.get("documents"), v.get("copies_written"), v.get("copies_per_document")] for k, v in r["by_cluster_size"].items()]
    return head + _table(["cluster size", "weight", "documents", "copies written", "copies per document"], rows)


def _decontamination_html(d: dict[str, Any]) -> str:
    rows = []
    for stage, s in d.items():
        if not s.get("enabled"):
            rows.append([stage, "off", "", "", ""])
            continue
        for name, info in (s.get("eval_sets") or {}).items():
            ex = (s.get("examples") or {}).get(name) or {}
            rows.append([stage, f"{name} ({info.get('records'):,} records, {info.get('ngrams'):,} {s.get('ngram')}-grams)",
                         (s.get("removed") or {}).get(name, 0), ex.get("ngram", ""), ex.get("id") or ex.get("file") or ""])
    return ("<h2>Decontamination</h2><p>Documents (filter) and examples (SFT, DPO) sharing an n-gram of normalised words with an "
            "evaluation set are removed as <code>contamination</code>.</p>"
            + _table(["stage", "evaluation set", "removed", "example shared n-gram", "example from"], rows))


def _benchmark_html(scores: dict[str, Any]) -> str:
    rows = [[stage, f"{100 * s['accuracy']:.1f}%" if s.get("accuracy") is not None else "—", f"{s.get('correct', 0)} of {s.get('scored', 0)}",
             s.get("parameters")] for stage, s in scores.items()]
    parts = ["<h2>Benchmark: GSM8K test</h2>",
             "<p>Greedy, zero-shot answers in the chat format; the final number of the answer is compared with the reference's.</p>",
             _table(["after", "accuracy", "correct", "parameters"], rows)]
    small = [s for s in scores.values() if s.get("accuracy") is not None]
    if small and all(s["accuracy"] < ABOUT_ZERO for s in small):
        params = max((s.get("parameters") or 0) for s in small)
        parts.append(f"<p><b>The score is about zero, as expected:</b> a model of {params:,} parameters trained for minutes on a CPU does not "
                     "solve grade-school math (the DeepSeek LLM report's 7B chat model scores 62.6%, its 67B chat model 84.1%). "
                     "The same stage scores a GPU-trained model, or an exported Hugging Face one "
                     "(<code>python -m pipelines eval --checkpoint &lt;folder&gt;</code>).</p>")
    last = list(scores)[-1]
    exs = scores[last].get("examples") or []
    if exs:
        parts.append(f"<h3>Examples ({html.escape(last)})</h3>" + _table(
            ["question", "reference", "answered", "response"],
            [[e["question"][:240], e["gold"], e.get("predicted"), (e.get("response") or "")[:300]] for e in exs[:3]]))
    return "".join(parts)


def write_report(cfg: Any, paths: dict[str, str], stages: list[str]) -> dict[str, str]:
    rep = build(cfg, paths, stages)
    plots = _plots(rep, paths)
    rep["plots"] = sorted(plots)
    where = {"json": io.join(cfg.output, "report.json"), "html": io.join(cfg.output, "report.html")}
    dedup_samples = ""
    samples = io.join(paths["dedup-stats"], "samples.html")  # dedup-stats' clusters, side by side
    if io.exists(samples):
        with io.open_input(samples) as f:
            dedup_samples = f.read().decode("utf-8")
    io.write_json(json.loads(json.dumps(rep, default=str)), where["json"])
    io.write_bytes(render_html(rep, plots, dedup_samples).encode("utf-8"), where["html"])
    return {**where, "stages": rep["stages"], "answer": (rep.get("answer") or {}).get("answer")}
