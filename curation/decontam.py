"""Decontamination: find training text that shares a long n-gram with an evaluation set.

GPT-3 (Brown et al. 2020, appendix C) removed training documents that shared a 13-gram of
normalised words (lowercased, punctuation stripped) with a benchmark; datatrove's
``NGramsDecontFilter`` does the same with 12-grams over hashed n-grams of each task's answers and
the n-grams spanning question and answer. Here, by default:

- **words**: the text in Unicode NFKD with its diacritics dropped, casefolded; a word is a run of
  letters and digits, and each CJK character is a word of its own (Chinese has no spaces);
  punctuation, symbols and whitespace only separate words. ``normalize_numbers`` turns every digit
  run into ``0`` (datatrove's ``norm_numbers``); it is off, as in GPT-3, because GSM8K problems of
  one template differ mostly in their numbers and those are different problems.
- **what is indexed**: every n-gram of every evaluation record. A ``{question, answer}`` record is
  its question followed by its answer (so n-grams spanning both count, as datatrove's overlap
  n-grams do; GPT-3 used the whole example too); a GSM8K answer with calculator annotations
  (``<<48/2=24>>``) is indexed a second time without them, the form its solutions are quoted in on
  the web. A ``{text}`` record is its text. Records shorter than ``ngram`` words add nothing
  (counted as ``short_records``).
- **a match**: a document is contaminated when any of its n-grams is in the index; the first
  one in document order is reported with the evaluation set and record it came from.

N-grams are 64-bit hashes (each word hashed with xxh64, the n words combined by a polynomial), so
the index of GSM8K test (1,319 problems) is about 3 MB of numbers and a document is checked with
one sorted search over its n-grams.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import xxhash

from curation.stats import StageStats

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_DIGITS = re.compile(r"\d+")
# GSM8K's calculator annotations inside its solutions: "48/2 = <<48/2=24>>24".
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_PRIME = np.uint64(0x100000001B3)
# A bitmap over the low bits of the index's hashes screens a document's n-grams before the
# sorted search (4M entries, 4 MB: about 4% of non-matching n-grams pass it for GSM8K test).
_FILTER_BITS = 22
_FILTER_MASK = np.uint64((1 << _FILTER_BITS) - 1)  # the 64-bit FNV prime: odd, so the combination stays invertible

REPO = Path(__file__).resolve().parents[1]
# The drop reason every stage counts a contaminated document or record under.
REASON = "contamination"


@dataclass
class DecontaminationConfig:
    # On by default: training text that overlaps the bundled evaluation sets is removed.
    enabled: bool = True
    # JSONL(.gz) files of {question, answer} or {text} records; each is one evaluation set, named
    # by its file name. A relative path is looked up in the working folder, then in the repository.
    eval_sets: list[str] = field(default_factory=lambda: ["data/sample/sft/gsm8k-test.jsonl"])
    # GPT-3's 13-grams (datatrove's default is 12).
    ngram: int = 13
    # Digit runs become "0" before matching (datatrove's norm_numbers). Off, as GPT-3.
    normalize_numbers: bool = False


@dataclass(frozen=True)
class Match:
    eval_set: str
    record: int  # 0-based record (line) of the evaluation set
    ngram: str  # the shared n-gram, in normalised words
    position: int  # word offset of the n-gram in the checked text

    def to_dict(self) -> dict[str, Any]:
        return {"eval_set": self.eval_set, "eval_record": self.record, "ngram": self.ngram, "word_offset": self.position}




# The combining diacritics left by NFKD in Latin, Greek and Cyrillic text (the Combining
# Diacritical Marks blocks): "café" and "cafe" are one word. Marks of other scripts (Devanagari
# vowel signs, Arabic harakat) stay: they are letters of those words, not accents. A character
# class of these few blocks is about 7x faster than of every combining mark.
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def words(text: str, normalize_numbers: bool = False) -> list[str]:
    """The normalised words of ``text`` (see the module docstring)."""
    t = text if text.isascii() else _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    out = _WORD.findall(t.casefold())
    if normalize_numbers:
        out = [_DIGITS.sub("0", w) for w in out]
    return out


def ngram_hashes(ws: list[str], n: int) -> np.ndarray:
    """One uint64 per n-gram of ``ws`` (``len(ws) - n + 1`` of them; none when shorter)."""
    count = len(ws) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    cache = {w: xxhash.xxh64_intdigest(w.encode("utf-8")) for w in set(ws)}
    wh = np.fromiter((cache[w] for w in ws), dtype=np.uint64, count=len(ws))
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _PRIME + wh[k : k + count]
    return h


def record_texts(rec: Any) -> list[str] | None:
    """The texts an evaluation record is indexed by, or None when it is neither form."""
    if not isinstance(rec, dict):
        return None
    q, a = rec.get("question"), rec.get("answer")
    if isinstance(q, str) and isinstance(a, str):
        out = [q + "\n" + a]
        plain = _CALCULATOR.sub("", a)
        if plain != a:
            out.append(q + "\n" + plain)
        return out
    if isinstance(rec.get("text"), str):
        return [rec["text"]]
    return None


def strings_of(value: Any) -> str:
    """Every string inside a JSON value (a chat record, a preference pair), joined by newlines:
    what an SFT or DPO record is checked by, whatever its format."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(value)
    return "\n".join(out)


def resolve_eval_set(path: str) -> str:
    """The file behind an ``eval_sets`` entry: as given, else (relative) under the repository."""
    if os.path.exists(path) or "://" in path:
        return path
    if not os.path.isabs(path) and (REPO / path).exists():
        return str(REPO / path)
    raise FileNotFoundError(f"evaluation set {path} not found (decontamination.eval_sets; "
                            "or turn decontamination off with --set decontamination.enabled=false)")


def eval_set_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def read_records(data: bytes) -> list[Any]:
    """Records of a JSONL(.gz) file's bytes; a line that is not JSON is None."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out: list[Any] = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append(None)
    return out


class ContaminationIndex:
    """The n-grams of one or more evaluation sets, and which set and record each came from."""

    def __init__(self, cfg: DecontaminationConfig, names: list[str], hashes: np.ndarray, sets: np.ndarray,
                 records: np.ndarray, info: dict[str, dict[str, int]]):
        self.ngram, self.normalize_numbers = cfg.ngram, cfg.normalize_numbers
        self.names, self.hashes, self.sets, self.records, self.info = names, hashes, sets, records, info
        h = hashlib.blake2b(digest_size=8)
        h.update(json.dumps([cfg.ngram, cfg.normalize_numbers, names]).encode())
        h.update(hashes.tobytes())
        self.digest = h.hexdigest()
        self._filter: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_filter"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _filter=None)

    @classmethod
    def build(cls, eval_sets: dict[str, Iterable[Any]], cfg: DecontaminationConfig) -> "ContaminationIndex":
        """From ``{name: records}`` (dicts of the forms :func:`record_texts` reads). An n-gram in
        several sets or records is kept with the first (sets in the given order)."""
        if cfg.ngram < 1:
            raise ValueError(f"decontamination.ngram must be at least 1 (got {cfg.ngram})")
        names = list(eval_sets)
        parts_h, parts_s, parts_r = [], [], []
        info: dict[str, dict[str, int]] = {}
        for si, name in enumerate(names):
            stat = {"records": 0, "unreadable_records": 0, "short_records": 0, "ngrams": 0}
            for ri, rec in enumerate(eval_sets[name]):
                stat["records"] += 1
                texts = record_texts(rec)
                if texts is None:
                    stat["unreadable_records"] += 1
                    continue
                hs = [ngram_hashes(words(t, cfg.normalize_numbers), cfg.ngram) for t in texts]
                hs = np.unique(np.concatenate(hs))
                if not len(hs):
                    stat["short_records"] += 1
                    continue
                parts_h.append(hs)
                parts_s.append(np.full(len(hs), si, dtype=np.int32))
                parts_r.append(np.full(len(hs), ri, dtype=np.int32))
            info[name] = stat
        hashes = np.concatenate(parts_h) if parts_h else np.zeros(0, dtype=np.uint64)
        sets = np.concatenate(parts_s) if parts_s else np.zeros(0, dtype=np.int32)
        recs = np.concatenate(parts_r) if parts_r else np.zeros(0, dtype=np.int32)
        # Sorted by hash, the first (set, record) of each hash kept: a stable sort keeps input order.
        order = np.argsort(hashes, kind="stable")
        hashes, sets, recs = hashes[order], sets[order], recs[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        hashes, sets, recs = hashes[first], sets[first], recs[first]
        for si, name in enumerate(names):
            info[name]["ngrams"] = int((sets == si).sum())
        return cls(cfg, names, hashes, sets, recs, info)

    @classmethod
    def from_files(cls, cfg: DecontaminationConfig, read: Any = None) -> "ContaminationIndex":
        """From the files of ``cfg.eval_sets``; ``read(path) -> bytes`` (default: a local read)."""
        sets: dict[str, list[Any]] = {}
        for spec in cfg.eval_sets:
            path = resolve_eval_set(spec)
            name = eval_set_name(path)
            if name in sets:
                raise ValueError(f"two evaluation sets are named {name!r} (decontamination.eval_sets): rename one file")
            if read is None:
                with open(path, "rb") as f:
                    data = f.read()
            else:
                data = read(path)
            sets[name] = read_records(data)
        return cls.build(sets, cfg)

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, text: str) -> Match | None:
        """The first n-gram of ``text`` (in text order) that an evaluation set holds, or None."""
        if not len(self.hashes):
            return None
        ws = words(text, self.normalize_numbers)
        h = ngram_hashes(ws, self.ngram)
        if not len(h):
            return None
        if self._filter is None:  # built where it is used, not shipped with the index
            self._filter = np.zeros(1 << _FILTER_BITS, dtype=bool)
            self._filter[self.hashes & _FILTER_MASK] = True
        cand = np.flatnonzero(self._filter[h & _FILTER_MASK])  # ~4% false candidates, no misses
        if not len(cand):
            return None
        at = np.searchsorted(self.hashes, h[cand])
        at[at == len(self.hashes)] = 0
        hit = np.flatnonzero(self.hashes[at] == h[cand])
        if not len(hit):
            return None
        i = int(cand[hit[0]])
        j = int(at[hit[0]])
        return Match(self.names[int(self.sets[j])], int(self.records[j]), " ".join(ws[i : i + self.ngram]), i)

    def summary(self) -> dict[str, Any]:
        return {"ngram": self.ngram, "normalize_numbers": self.normalize_numbers, "index_digest": self.digest,
                "eval_sets": {n: dict(self.info[n]) for n in self.names}}


def contamination_index(cfg: DecontaminationConfig) -> ContaminationIndex | None:
    """The index of ``cfg``'s evaluation sets (local files or object-store URIs), or None when
    decontamination is off; a set that cannot be read is a :class:`SettingError` naming it."""
    if not cfg.enabled:
        return None
    from storage import io
    from storage.errors import SettingError

    def read(path: str) -> bytes:
        with io.open_input(path) as f:
            return f.read()

    try:
        return ContaminationIndex.from_files(cfg, read=read)
    except (OSError, ValueError) as e:
        raise SettingError(str(e)) from None


def count(stats: StageStats, match: Match, **where: Any) -> None:
    """Count one removal: dropped as ``contamination``, counter ``contamination.<set>``, and the
    first such match kept as the set's example (with ``where``: the id, url or record)."""
    stats.drop(REASON)
    stats.add(f"{REASON}.{match.eval_set}")
    stats.example(f"{REASON}.{match.eval_set}", {**where, **match.to_dict()})


def summary(stats: StageStats, index: ContaminationIndex | None) -> dict[str, Any]:
    """What a stage's stats.json shows under ``decontamination``: the index, the removals per
    evaluation set and an example match of each."""
    if index is None:
        return {"enabled": False}
    removed = {n: int(stats.counters.get(f"{REASON}.{n}", 0)) for n in index.names}
    examples = {n: stats.examples[f"{REASON}.{n}"] for n in index.names if f"{REASON}.{n}" in stats.examples}
    return {"enabled": True, **index.summary(), "removed": removed, "examples": examples}
