"""A labelled multi-dump corpus for measuring dedup: real pages re-crawled with real-looking edits.

Dump 0 holds the real documents (plus new pages); each later dump re-crawls a share of the pages
seen so far and changes them the way re-crawls do - dates and counters, a changed header or
footer, a few edited words, truncation, appended comments, reordered paragraphs - and adds new
pages. New pages are built from sentences of the real documents (words shuffled, seeded RNG), so
the word statistics stay those of web text without accidental near duplicates. Everything is deterministic in ``seed``.

The truth is computed, not assumed: ``pairwise_jaccard`` gives the exact Jaccard on word
5-gram sets of every pair of documents that share a shingle (a sparse X @ X.T).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
from scipy import sparse

from curation.dedup import minhash as mh
from curation.schema import document_id

_SENT = re.compile(r"(?<=[.!?])\s+")
EDITS = ("dates", "boilerplate", "small_edit", "truncate", "comments", "reorder")


@dataclass
class CorpusConfig:
    dumps: int = 4
    # Share of the pages already seen that each new dump re-crawls (the report's curve implies
    # heavy overlap between dumps: 46.7% removed with 2 dumps against 22.2% with 1).
    recrawl: float = 0.5
    # New pages per dump, as a multiple of the real documents.
    new_pages: float = 0.5
    # Share of re-crawls that are byte-identical (no edit at all).
    identical: float = 0.2
    sentences_per_new_page: tuple[int, int] = (8, 40)
    seed: int = 0


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n") if p.strip()]


def sentence_pool(texts: Iterable[str]) -> list[str]:
    pool = []
    for t in texts:
        for p in _paragraphs(t):
            pool.extend(s for s in _SENT.split(p) if len(s.split()) >= 4)
    return pool


def _dates(text: str, rng: random.Random) -> str:
    return re.sub(r"\d+", lambda m: str(rng.randrange(10 ** len(m.group(0)))), text)


def _edit(text: str, kind: str, rng: random.Random, pool: list[str]) -> str:
    paras = _paragraphs(text) or [text]
    if kind == "dates":
        return _dates(text, rng) + f"\nLast updated {rng.randrange(1, 28)}/{rng.randrange(1, 12)}/20{rng.randrange(10, 25)}"
    if kind == "boilerplate":
        head = rng.choice(["Skip to content", "Menu Home About Contact", "Sign in | Register", "Accept cookies to continue"])
        foot = rng.choice(["© All rights reserved.", "Privacy policy · Terms of use", "Follow us on social media", "Share this page"])
        return "\n".join([head, *paras, foot])
    if kind == "small_edit":
        words = text.split(" ")
        for _ in range(max(1, len(words) // 100)):
            i = rng.randrange(len(words))
            words[i] = rng.choice(["the", "a", "new", "this", "our", "updated", words[i].upper()])
        return " ".join(words)
    if kind == "truncate":
        keep = max(1, int(len(paras) * rng.uniform(0.85, 0.97)))
        return "\n".join(paras[:keep])
    if kind == "comments":
        n = rng.randrange(1, 3)
        return "\n".join([*paras, "Comments", *(f"{rng.choice(pool)}" for _ in range(n))])
    if kind == "reorder":
        if len(paras) > 2:
            i = rng.randrange(len(paras) - 1)
            paras[i], paras[i + 1] = paras[i + 1], paras[i]
        return "\n".join(paras)
    raise ValueError(kind)


def _fresh_sentences(pool: list[str], rng: random.Random) -> Iterator[str]:
    """Sentences for new pages: the real ones in a fresh order each round, their words shuffled,
    so two new pages never share word 5-grams by accident (the real pool is small)."""
    while True:
        order = list(range(len(pool)))
        rng.shuffle(order)
        for i in order:
            words = pool[i].split()
            rng.shuffle(words)
            yield " ".join(words)


def generate_dumps(real: list[dict[str, Any]], cfg: CorpusConfig = CorpusConfig()) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(dump name, documents) for each of ``cfg.dumps`` synthetic dumps, oldest first, one at a
    time (a large corpus is written dump by dump). Documents are DOCUMENT_SCHEMA dicts with a
    ``metadata.title`` naming their lineage (``page:<n> edit:<kind>``) for inspection."""
    rng = random.Random(cfg.seed)
    pool = sentence_pool(d["text"] for d in real)
    fresh = _fresh_sentences(pool, rng)
    pages: list[tuple[str, str]] = []  # (url, current text)
    n_new = int(len(real) * cfg.new_pages)
    for d in range(cfg.dumps):
        dump = f"CC-MAIN-{2019 + d // 4:04d}-{10 + 10 * (d % 4):02d}"
        batch: list[tuple[int, str, str]] = []
        if d == 0:
            for doc in real:
                pages.append((doc.get("url") or f"https://example.org/real/{len(pages)}", doc["text"]))
                batch.append((len(pages) - 1, doc["text"], "original"))
        else:
            for p in sorted(rng.sample(range(len(pages)), int(len(pages) * cfg.recrawl))):
                url, text = pages[p]
                kind = "identical" if rng.random() < cfg.identical else rng.choice(EDITS)
                new = text if kind == "identical" else _edit(text, kind, rng, pool)
                pages[p] = (url, new)
                batch.append((p, new, kind))
        for _ in range(n_new):
            k = rng.randrange(*cfg.sentences_per_new_page)
            sents = [next(fresh) for _ in range(k)]
            text = "\n".join(" ".join(sents[i : i + 4]) for i in range(0, k, 4))
            pages.append((f"https://new.example.org/{d}/{len(pages)}", text))
            batch.append((len(pages) - 1, text, "new"))
        docs = []
        for page, text, kind in batch:
            url = pages[page][0]
            docs.append({
                "id": document_id(dump, f"{url}|{page}"), "text": text, "url": url, "dump": dump,
                "crawl_date": None, "language": "en", "language_score": None,
                "metadata": {"warc_record_id": None, "warc_digest": None, "title": f"page:{page} edit:{kind}",
                             "source_file": "dedup_corpus", "content_type": "text/plain", "charset": None},
            })
        yield dump, docs


def generate(real: list[dict[str, Any]], cfg: CorpusConfig = CorpusConfig()) -> list[dict[str, Any]]:
    """Every document of :func:`generate_dumps`, oldest dump first."""
    return [doc for _, docs in generate_dumps(real, cfg) for doc in docs]


def pairwise_jaccard(texts: list[str], ngram: int = 5, min_jaccard: float = 0.5,
                     shingle_cfg: mh.ShingleConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True Jaccard (:func:`minhash.jaccard`'s definition: the stage's normalisation - case
    folded, digits as 0, punctuation dropped - and shingle hashes) of every pair (i < j) that
    reaches ``min_jaccard``: intersection sizes of all pairs at once as a sparse X @ X.T."""
    cfg = shingle_cfg or mh.ShingleConfig(ngram=ngram)
    sets = mh.shingle_sets([mh.normalize(t, cfg) for t in texts], cfg.ngram)
    size = np.array([len(s) for s in sets], dtype=np.int64)
    doc = np.repeat(np.arange(len(texts)), size)
    h = np.concatenate(sets) if sets else np.zeros(0, np.uint32)
    _, col = np.unique(h, return_inverse=True)
    x = sparse.csr_matrix((np.ones(len(h), np.float32), (doc, col)), shape=(len(texts), col.max() + 1 if len(col) else 0))
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    j = mh.jaccard_from_counts(inter.data, size[inter.row], size[inter.col])
    keep = j >= min_jaccard
    return inter.row[keep].astype(np.int64), inter.col[keep].astype(np.int64), j[keep]


# ---- the hostile web: the shapes that break dedup on real crawls ------------------------------------


@dataclass
class HostileConfig:
    """Sizes of the hostile shapes (``scale`` multiplies every count; 1.0 is the benchmark's).

    - template: pages of one template (a parked domain, a shop or forum skin), each with its own
      host name and about ``template_change`` of its words changed;
    - chain: a page re-crawled ``chain`` times, each version the previous one with about
      ``chain_change`` of its words changed, so its ends share nothing;
    - copies: exact copies of one page under different URLs;
    - tiny: documents of 0-3 words;
    - every_dump: one page in every dump, ``every_dump`` copies in all, lightly edited;
    - the real documents as they are.
    """

    template: int = 1_000_000
    template_change: float = 0.02
    chain: int = 100_000
    chain_change: float = 0.01
    copies: int = 200_000
    tiny: int = 50_000
    every_dump: int = 10_000
    every_dump_change: float = 0.005
    dumps: int = 4
    scale: float = 1.0
    seed: int = 0

    def count(self, name: str) -> int:
        return max(1, int(round(getattr(self, name) * self.scale)))


def _changed(words: list[str], share: float, rng: random.Random, vocab: list[str]) -> list[str]:
    """``words`` with about ``share`` of them (at least one) replaced by words of ``vocab``."""
    out = list(words)
    for _ in range(max(1, round(len(out) * share))):
        out[rng.randrange(len(out))] = rng.choice(vocab)
    return out


def _doc(dump: str, url: str, text: str, lineage: str) -> dict[str, Any]:
    return {"id": document_id(dump, url), "text": text, "url": url, "dump": dump, "crawl_date": None, "language": "en",
            "language_score": None,
            "metadata": {"warc_record_id": None, "warc_digest": None, "title": lineage, "source_file": "dedup_corpus",
                         "content_type": "text/plain", "charset": None}}


def hostile_documents(real: list[dict[str, Any]], cfg: HostileConfig = HostileConfig(),
                      chunk: int = 20_000) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(dump, documents) in chunks of at most ``chunk``: every hostile shape of ``cfg`` built from the
    real documents, deterministic in ``cfg.seed``. ``metadata.title`` names each document's shape
    and position (``template:17``, ``chain:4031``, ``copy:9``, ``tiny:3``, ``every_dump:88``,
    ``real:5``); chain versions go to the dumps in order (the newest dump holds the latest)."""
    rng = random.Random(cfg.seed)
    dumps = [f"CC-MAIN-{2019 + d // 4:04d}-{10 + 10 * (d % 4):02d}" for d in range(cfg.dumps)]
    vocab = sorted({w for d in real for w in d["text"].split()})
    by_words = sorted(real, key=lambda d: (len(d["text"].split()), d["id"]))
    # Pages of a few hundred words: the size of a typical template or article page.
    mid = [d for d in by_words if 300 <= len(d["text"].split()) <= 600] or by_words[len(by_words) // 2 :]
    template, chained, copied, everywhere = (mid[i * len(mid) // 4]["text"] for i in range(4))

    def chunks(n: int, make) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        per = -(-n // cfg.dumps)
        for d, dump in enumerate(dumps):
            lo, hi = d * per, min(n, (d + 1) * per)
            for c in range(lo, hi, chunk):
                yield dump, [make(i, dump) for i in range(c, min(hi, c + chunk))]

    yield dumps[0], [_doc(dumps[0], d.get("url") or f"https://real.example.org/{i}", d["text"], f"real:{i}")
                     for i, d in enumerate(real)]
    words = template.split()

    def template_page(i: int, dump: str) -> dict[str, Any]:
        host = f"site-{i}.example.com"
        text = f"Welcome to {host}\n" + " ".join(_changed(words, cfg.template_change, rng, vocab))
        return _doc(dump, f"https://{host}/", text, f"template:{i}")

    yield from chunks(cfg.count("template"), template_page)
    chain = [chained.split()]

    def chain_page(i: int, dump: str) -> dict[str, Any]:
        chain[0] = _changed(chain[0], cfg.chain_change, rng, vocab)
        return _doc(dump, f"https://drift.example.org/page?v={i}", " ".join(chain[0]), f"chain:{i}")

    yield from chunks(cfg.count("chain"), chain_page)
    yield from chunks(cfg.count("copies"),
                      lambda i, dump: _doc(dump, f"https://mirror-{i}.example.net/article", copied, f"copy:{i}"))
    tiny_vocab = vocab[:1000]
    yield from chunks(cfg.count("tiny"), lambda i, dump: _doc(
        dump, f"https://tiny.example.org/{i}", " ".join(rng.choice(tiny_vocab) for _ in range(i % 4)), f"tiny:{i}"))
    every = everywhere.split()
    n_every = cfg.count("every_dump")
    for d, dump in enumerate(dumps):  # the same page in every dump: spread evenly, dump by dump
        rows = range(d, n_every, cfg.dumps)
        for c in range(0, len(rows), chunk):
            yield dump, [_doc(dump, f"https://everywhere.example.org/{i}", " ".join(_changed(every, cfg.every_dump_change, rng, vocab)),
                              f"every_dump:{i}") for i in rows[c : c + chunk]]
