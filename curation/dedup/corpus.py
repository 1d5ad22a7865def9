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
