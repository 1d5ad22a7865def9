"""Tokenizer benchmark: compression against the cl100k reference, and tokenize-stage throughput.

Compression: bytes and characters per token on held-out English web text, Chinese web text and
Python code, for our tokenizer trained at 32k and 100k ordinary tokens on growing slices of the
largest training text available here, and for the cl100k-equivalent reference in
``../shared/data/tokenizers`` (a ratio > 1 means we need more tokens than the reference).

Throughput: MB of text per second per core of the tokenize stage (Ray, 1 and 2 workers, warm
workers) and of a plain ``Tokenizer.encode_batch`` loop (and ``encode_batch_fast``) over the same
shards, on one thread, measured in the same run (the stage's CPU: its Ray workers' CPU time around each run).

Training cost: the train-tokenizer stage on 1/4, 1/2 and all of the training text: seconds and
peak memory per MB.

    python benchmarks/bench_tokenize.py [--part compression|training|throughput|all] [--copies N]
"""

from __future__ import annotations

import os

# One tokenizer thread everywhere, so "per core" means what it says. Set before tokenizers runs
# anything (its thread pool reads it once); Ray's workers inherit it.
os.environ["RAYON_NUM_THREADS"] = "1"

import argparse
import gzip
import json
import sys
import sysconfig
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tokenizer as T  # noqa: E402
from curation.schema import document_id  # noqa: E402
from curation.sources import read_dolma_jsonl  # noqa: E402
from storage import io  # noqa: E402

SAMPLE = REPO / "data" / "sample"
SHARED = REPO.parent / "shared" / "data"
BUILD = REPO / "build" / "bench-tokenize"
REFERENCE = SHARED / "tokenizers" / "cl100k-equivalent-dolma2.json"


def _cjk_share(text: str) -> float:
    return sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff") / max(1, len(text))


def _held_out(key: str) -> bool:
    """One document in five is held out, by a hash of its id (stable, order-free)."""
    return xxhash.xxh64_intdigest(key.encode()) % 5 == 0


def _data_file(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    return p if p.exists() else SAMPLE.joinpath(*parts)


# ---------------------------------------------------------------- corpora


def _warc_chinese_pages() -> list[str]:
    """Chinese pages of the real CC-MAIN-2020-34 WARC, extracted as the extract stage does."""
    from curation.extract import extract_text, iter_records
    from curation.extract.html import decode_html

    out = []
    with open(_data_file("warc", "cc-main-2020-34-sample.warc.gz"), "rb") as f:
        for rec in iter_records(f):
            if rec.kind != "response" or not rec.body:
                continue
            try:
                html, _ = decode_html(rec.body, rec.charset)
            except ValueError:
                continue
            text = extract_text(html, rec.uri, fast=False, include_comments=False, include_tables=True) or ""
            if _cjk_share(text) > 0.2:
                out.append(text)
    return out


def corpora() -> tuple[list[str], dict[str, list[str]]]:
    """(training texts, {held-out set: texts}) from the real data here."""
    web = []
    for path in sorted((SAMPLE / "text").glob("*.jsonl.gz")):
        with open(path, "rb") as f:
            web += [(d["id"], d["text"], path.name) for d in read_dolma_jsonl(f, path.name)]
    train, english, chinese = [], [], []
    for doc_id, text, name in web:
        held = _held_out(doc_id) or name.startswith("cc_en_head-0174")
        if not held:
            train.append(text)
        elif _cjk_share(text) > 0.2:
            chinese.append(text)
        elif sum(c.isascii() for c in text) > 0.97 * len(text):
            english.append(text)
    gold = json.loads(_data_file("extraction-gold", "ground-truth.json").read_text(encoding="utf-8")) if _data_file(
        "extraction-gold", "ground-truth.json").exists() else {}
    for key, value in sorted(gold.items()):
        (english if _held_out(key) else train).append(value["articleBody"])
    chinese += _warc_chinese_pages()
    # Instruction and dialogue text is training text only.
    with gzip.open(_data_file("preference", "hh-rlhf-harmless-base-test.jsonl.gz"), "rt", encoding="utf-8") as f:
        train += [json.loads(line)["chosen"] for line in f]
    for name in ("gsm8k-test.jsonl", "self-instruct-user-oriented.jsonl", "self-instruct-seed-tasks.jsonl"):
        with open(_data_file("sft", name), encoding="utf-8") as f:
            train += [" ".join(str(v) for v in json.loads(line).values()) for line in f]
    # Held-out code: real Python from the interpreter's standard library (never trained on).
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:80]]
    return train, {"english web": english, "chinese web": chinese, "python code": code}


def _mb(texts: list[str]) -> float:
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6


# ---------------------------------------------------------------- compression


def compression(results: dict) -> None:
    from tokenizers import Tokenizer

    train, held = corpora()
    print("\n== compression: held-out bytes/token and chars/token ==")
    print(f"training text: {len(train):,} documents, {_mb(train):.2f} MB (web, news, dialogue, instructions)")
    for name, texts in held.items():
        print(f"held out: {name:<12} {len(texts):>4} documents, {_mb(texts):.3f} MB")

    def measure(tok: Tokenizer) -> dict[str, tuple[float, float]]:
        out = {}
        for name, texts in held.items():
            n = sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))
            out[name] = (sum(len(t.encode()) for t in texts) / n, sum(map(len, texts)) / n)
        return out

    reference = Tokenizer.from_file(str(REFERENCE))
    rows = [("cl100k reference", "-", reference.get_vocab_size(), measure(reference), None)]
    results["compression"] = {"reference": rows[0][3], "ours": []}
    # Growing slices of the training text (a fixed shuffle), at both vocabulary sizes.
    order = sorted(range(len(train)), key=lambda i: xxhash.xxh64_intdigest(str(i).encode()))
    for fraction in (0.25, 0.5, 1.0):
        texts = [train[i] for i in order[: int(len(order) * fraction)]]
        for vocab in (32_000, 100_000):
            for min_frequency in (2, 1):  # 1 only if 2 cannot fill the vocabulary
                start = time.perf_counter()
                try:
                    tok = T.train(texts, T.TokenizerConfig(vocab_size=vocab, min_frequency=min_frequency))
                except ValueError as e:
                    last = str(e)
                    continue
                seconds = time.perf_counter() - start
                rows.append((f"ours {vocab // 1000}k", f"{_mb(texts):.2f} MB", tok.get_vocab_size(), measure(tok), (min_frequency, seconds)))
                break
            else:
                print(f"  ours {vocab // 1000}k on {_mb(texts):.2f} MB: cannot fill the vocabulary ({last.split(';')[0]})")
                continue
            results["compression"]["ours"].append(
                {"vocab": vocab, "train_mb": round(_mb(texts), 3), "min_frequency": min_frequency, "train_s": round(seconds, 2), "held_out": rows[-1][3]}
            )
    names = list(held)
    print(f"\n{'tokenizer':<18} {'trained on':>10} {'vocab':>8}  " + "  ".join(f"{n + ' B/tok (C/tok)':>28}" for n in names) + "   ratio to cl100k (B/tok)")
    ref = rows[0][3]
    for label, size, vocab, m, extra in rows:
        cells = "  ".join(f"{m[n][0]:>18.3f} ({m[n][1]:.3f})" for n in names)
        ratio = "  ".join(f"{ref[n][0] / m[n][0]:.3f}" for n in names)
        note = f"  [min_freq {extra[0]}, {extra[1]:.1f} s]" if extra else ""
        print(f"{label:<18} {size:>10} {vocab:>8,}  {cells}   {ratio}{note}")
    print("(ratio = our tokens / reference tokens on the same text; > 1: we need more tokens)")


# ---------------------------------------------------------------- throughput


def _bench_shards(copies: int) -> tuple[Path, float]:
    """Real text (sample web text, news articles, dialogues) as 8 Parquet shards, repeated ``copies`` times."""
    train, held = corpora()
    texts = train + held["english web"] + held["chinese web"]
    folder = BUILD / f"shards-x{copies}"
    docs = [(document_id("bench", f"{c}-{i}"), t) for c in range(copies) for i, t in enumerate(texts)]
    n = 8
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(n):
            part = docs[s::n]
            io.write_parquet(pa.table({"id": [d for d, _ in part], "text": [t for _, t in part]}), str(folder / f"part-{s:03d}.parquet"))
        (folder / "done").write_text("")
    return folder, _mb([t for _, t in docs])


def training_cost(results: dict) -> None:
    """The train-tokenizer stage (Ray) on growing slices of the training text: time and peak memory per MB."""
    import shutil

    import ray

    from pipelines.train_tokenizer import train_tokenizer

    train, _ = corpora()
    folder = BUILD / "train-shards"
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(4):
            part = list(enumerate(train))[s::4]
            io.write_parquet(pa.table({"id": [document_id("train", str(i)) for i, _ in part], "text": [t for _, t in part]}), str(folder / f"part-{s:03d}.parquet"))
        (folder / "done").write_text("")
    total = _mb(train)
    print(f"\n== train-tokenizer stage: time and peak memory per MB (vocab 8,000, 1 trainer thread) ==")
    print(f"{'text MB':>8} {'train s':>8} {'s/MB':>6} {'peak RSS MB':>12} {'+RSS MB':>8} {'+RSS MB per MB':>15}")
    rows = []
    for fraction in (0.25, 0.5, 1.0):
        out = BUILD / "train-stage"
        shutil.rmtree(out, ignore_errors=True)
        cfg = T.TokenizerConfig(vocab_size=8000, max_bytes=int(total * fraction * 1e6) + 1)
        _, fig = train_tokenizer([str(folder)], str(out), cfg)
        ray.shutdown()  # a fresh worker per run, so each peak is its own
        rows.append(fig)
        print(f"{fig['text_mb']:>8.2f} {fig['train_seconds']:>8.1f} {fig['seconds_per_mb']:>6.2f} {fig['peak_rss_mb']:>12.0f} {fig['peak_rss_increase_mb']:>8.0f} {fig['peak_rss_increase_mb_per_mb']:>15.1f}")
    print("(memory follows the distinct pre-tokens, not the text: the per-MB figure falls as text grows)")
    results["training"] = rows


def _ray_worker_cpu() -> float:
    """CPU seconds so far of this driver's Ray workers (processes titled ``ray::...`` among its
    descendants; the raylet and GCS are not workers): their difference around a stage run is what
    its tasks cost, other users' Ray processes on the machine left out."""
    import psutil

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if (proc.cmdline() or [""])[0].startswith("ray::"):
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:  # a worker that exited in between
            pass
    return total


def throughput(results: dict, copies: int, vocab: int, repeats: int) -> None:
    import shutil

    import ray
    from tokenizers import Tokenizer

    from pipelines.runtime import init_ray
    from pipelines.tokenize import TokenizeConfig, tokenize

    folder, mb = _bench_shards(copies)
    tok_dir = BUILD / f"tokenizer-{vocab}"
    if not (tok_dir / "tokenizer.json").exists():
        train, _ = corpora()
        T.save(T.train(train, T.TokenizerConfig(vocab_size=vocab, min_frequency=1)), str(tok_dir))
    shards = sorted(str(p) for p in folder.glob("*.parquet"))
    print(f"\n== throughput: {len(shards)} shards, {mb:.1f} MB of real text, tokenizer {vocab:,} ordinary tokens ==")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    tok.encode_special_tokens = True

    def plain(fast: bool) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        encode = tok.encode_batch_fast if fast else tok.encode_batch
        for path in shards:
            texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
            for i in range(0, len(texts), 512):
                encode(texts[i : i + 512], add_special_tokens=False)
        return time.perf_counter() - wall, time.process_time() - cpu

    init_ray(num_cpus=2)

    def stage(workers: int) -> tuple[float, float]:
        out = BUILD / f"out-w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        cpu, wall = _ray_worker_cpu(), time.perf_counter()
        stats, _ = tokenize(str(tok_dir), [str(folder)], str(out), TokenizeConfig(max_workers=workers))
        wall, cpu = time.perf_counter() - wall, _ray_worker_cpu() - cpu
        assert not stats.failed_files and stats.input == stats.output
        return wall, cpu

    plain(True)  # page cache
    stage(2)  # start both workers and load the tokenizer in each
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("loop", "fast", "w1", "w2")}
    for _ in range(repeats):  # interleaved, best of each: the machine is shared
        runs["loop"].append(plain(False))
        runs["w1"].append(stage(1))
        runs["fast"].append(plain(True))
        runs["w2"].append(stage(2))
    w2 = sorted((BUILD / "out-w2" / "data").glob("*.parquet"))
    same = bool(w2) and all((BUILD / "out-w1" / "data" / p.name).read_bytes() == p.read_bytes() for p in w2)
    ray.shutdown()
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}

    rows = [
        ("plain encode_batch loop", 1, "loop"),
        ("plain encode_batch_fast loop", 1, "fast"),
        ("tokenize stage, 1 worker", 1, "w1"),
        ("tokenize stage, 2 workers", 2, "w2"),
    ]
    print(f"best of {repeats}, interleaved")
    print(f"{'':<30} {'cores':>5} {'wall s':>7} {'MB/s':>6} {'MB/s/core':>10} {'CPU s':>7} {'MB per CPU-s':>13}")
    for label, cores, k in rows:
        w, c = best[k]
        print(f"{label:<30} {cores:>5} {w:>7.2f} {mb / w:>6.2f} {mb / w / cores:>10.2f} {c:>7.2f} {mb / c:>13.2f}")
    (lw, lc), (fw, fc), (w1, c1), (w2, c2) = best["loop"], best["fast"], best["w1"], best["w2"]
    print(f"stage (1 worker) vs plain encode_batch loop, per core: wall {lw / w1:.2f}x, CPU time {lc / c1:.2f}x  (target >= 0.9x)")
    print(f"stage (1 worker) vs plain encode_batch_fast loop:      wall {fw / w1:.2f}x, CPU time {fc / c1:.2f}x")
    print(f"2 workers vs 1: wall speed-up {w1 / w2:.2f}x of 2 ({w1 / w2 / 2:.0%} efficiency); CPU per MB {c2 / c1:.2f}x of 1 worker; outputs identical: {same}")
    print(f"load average at end {os.getloadavg()[0]:.1f} (a shared machine: wall figures are lower bounds)")
    results["throughput"] = {
        "mb": round(mb, 2), "vocab": vocab, "repeats": repeats, "best_wall_cpu_s": best,
        "stage_vs_loop_wall": lw / w1, "stage_vs_loop_cpu": lc / c1, "scaling_2_workers_wall": w1 / w2, "identical_outputs": same,
        "mb_per_cpu_s": {"stage_1_worker": mb / c1, "plain_encode_batch": mb / lc, "plain_encode_batch_fast": mb / fc, "stage_2_workers": mb / c2},
        "mb_per_s_wall": {"stage_1_worker": mb / w1, "plain_encode_batch": mb / lw, "plain_encode_batch_fast": mb / fw, "stage_2_workers": mb / w2},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "compression", "training", "throughput"), default="all")
    parser.add_argument("--copies", type=int, default=1, help="repeat the real text this many times for the throughput shards")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each throughput measurement (best is kept)")
    parser.add_argument("--vocab", type=int, default=100_000, help="ordinary tokens of the tokenizer used for throughput")
    args = parser.parse_args()
    results: dict = {}
    if args.part in ("all", "compression"):
        compression(results)
    if args.part in ("all", "training"):
        training_cost(results)
    if args.part in ("all", "throughput"):
        throughput(results, args.copies, args.vocab, args.repeats)
    record_figures(results)


def record_figures(results: dict) -> None:
    """What the run printed, as data: benchmarks/results/tokenize.json (the parts that ran)."""
    from benchmarks.results import record

    rows = []
    t = results.get("throughput")
    if t:
        rows.append({"stage": "tokenize (1 worker)", "figure": t["mb_per_cpu_s"]["stage_1_worker"],
                     "peer": {"name": "plain tokenizers encode_batch loop", "figure": t["mb_per_cpu_s"]["plain_encode_batch"]},
                     "ratio": t["stage_vs_loop_cpu"], "unit": "MB of text per CPU-second"})
    c = results.get("compression")
    if c and c["ours"]:
        # The largest training text at the recipe's 100,000 tokens (else the largest that filled).
        ours = max(c["ours"], key=lambda r: (r["train_mb"], r["vocab"]))
        web, ref = ours["held_out"]["english web"][0], c["reference"]["english web"][0]
        rows.append({"stage": f"tokenizer ({ours['vocab'] // 1000}k, {ours['train_mb']:.1f} MB of training text)", "figure": web,
                     "peer": {"name": "cl100k (GPT-4's tokenizer)", "figure": ref}, "ratio": web / ref,
                     "unit": "bytes per token, held-out English web text"})
    record("tokenize", results, headline=rows or None)


if __name__ == "__main__":
    main()
