"""Decontamination figures (``make bench-decontam``): the GSM8K test index, the check's speed on
the sample's real web text, and what each bundled training set shares with GSM8K test.

Prints: index size and build CPU time; documents and MB per CPU-second of ``find`` over the
717 sample documents (3 passes, best); matches per bundled SFT/preference file at the default
13-grams and, side by side, with numbers normalised and with 8-grams (what a looser setting would
remove from the demo's SFT data).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from curation.decontam import ContaminationIndex, DecontaminationConfig, read_records, strings_of  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sample")
TRAIN_SETS = ["sft/gsm8k-chat-train.jsonl", "sft/self-instruct-seed-tasks.jsonl", "sft/self-instruct-user-oriented.jsonl",
              "preference/orca-dpo-pairs.jsonl", "preference/hh-rlhf-harmless-base-test.jsonl.gz"]


def main() -> int:
    cpu = time.process_time()
    index = ContaminationIndex.from_files(DecontaminationConfig())
    built = time.process_time() - cpu
    info = index.info["gsm8k-test"]
    print(f"index: gsm8k-test, {info['records']:,} records, {len(index):,} 13-grams, built in {built:.2f} CPU s")

    docs = []
    for name in sorted(os.listdir(os.path.join(SAMPLE, "text"))):
        with gzip.open(os.path.join(SAMPLE, "text", name), "rt", encoding="utf-8") as f:
            docs += [json.loads(line)["text"] for line in f if line.strip()]
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    best = float("inf")
    for _ in range(3):
        cpu = time.process_time()
        hits = sum(index.find(d) is not None for d in docs)
        best = min(best, time.process_time() - cpu)
    print(f"check: {len(docs)} sample web documents ({mb:.2f} MB): {len(docs) / best:,.0f} documents/CPU-s, "
          f"{mb / best:.1f} MB/CPU-s; {hits} contaminated")

    settings = {"13-grams (default)": DecontaminationConfig(), "13-grams, numbers normalised": DecontaminationConfig(normalize_numbers=True),
                "8-grams": DecontaminationConfig(ngram=8)}
    indexes = {k: ContaminationIndex.from_files(c) for k, c in settings.items()}
    print(f"\n{'training set':<48} {'records':>8} " + " ".join(f"{k:>30}" for k in settings))
    matches: dict[str, dict] = {}
    for rel in TRAIN_SETS:
        with open(os.path.join(SAMPLE, rel), "rb") as f:
            recs = read_records(f.read())
        texts = [strings_of(r) for r in recs]
        counts = [sum(ix.find(t) is not None for t in texts) for ix in indexes.values()]
        print(f"{rel:<48} {len(recs):>8} " + " ".join(f"{c:>30}" for c in counts))
        matches[rel] = {"records": len(recs), **dict(zip(settings, counts))}
    recs = read_records(open(os.path.join(SAMPLE, "sft", "gsm8k-chat-train.jsonl"), "rb").read())
    print("\nthe default's matches in gsm8k-chat-train:")
    for i, r in enumerate(recs):
        m = index.find(strings_of(r))
        if m:
            print(f"  record {i} ~ gsm8k-test #{m.record}: '{m.ngram}'")
    from benchmarks.results import record

    record("decontam", {"index_records": info["records"], "index_ngrams": len(index), "index_build_cpu_s": built,
                        "documents": len(docs), "mb": mb, "docs_per_cpu_s": len(docs) / best, "mb_per_cpu_s": mb / best,
                        "contaminated_documents": hits, "training_set_matches": matches},
           headline={"stage": "decontamination check (GSM8K test 13-grams)", "figure": len(docs) / best, "peer": None, "ratio": None,
                     "unit": "documents per CPU-second"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
