"""Decontamination on real overlaps: a GSM8K test problem planted in a real web page is found
(whatever its case and punctuation) and a paraphrase of it is not; the filter drops the planted
page as ``contamination`` naming the set and the shared n-gram, and keeps it when switched off;
SFT preparation drops the chat records that overlap the test set, and the demo's SFT data is
checked for what it shares with GSM8K test."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from conftest import SAMPLE
from curation.decontam import ContaminationIndex, DecontaminationConfig, read_records, strings_of, words
from curation.sources import read_dolma_jsonl

GSM8K_TEST = SAMPLE / "sft" / "gsm8k-test.jsonl"
# GSM8K test problem 0, and the same problem in other words (no 13 words in a row in common).
QUESTION = read_records(GSM8K_TEST.read_bytes())[0]["question"]
PARAPHRASE = ("Every day the ducks that Janet keeps produce 16 eggs. Each morning three of them are her breakfast, and four more "
              "go into the muffins she bakes for friends. Whatever is left she takes to the farmers' market, where one fresh "
              "egg fetches $2. How many dollars does the market bring her each day?")


@pytest.fixture(scope="module")
def index() -> ContaminationIndex:
    return ContaminationIndex.from_files(DecontaminationConfig())


@pytest.fixture(scope="module")
def pages() -> list[dict]:
    """Real English web pages (CCNet head documents of the sample)."""
    with open(SAMPLE / "text" / "cc_en_head-0091.jsonl.gz", "rb") as f:
        return list(read_dolma_jsonl(f, "cc_en_head-0091.jsonl.gz"))


def plant(text: str, insert: str) -> str:
    """``insert`` as a paragraph in the middle of a page."""
    paras = text.split("\n")
    k = len(paras) // 2
    return "\n".join(paras[:k] + [insert] + paras[k:])


def test_the_index_of_gsm8k_test(index):
    info = index.summary()["eval_sets"]["gsm8k-test"]
    assert info["records"] == 1319 and info["unreadable_records"] == 0 and info["short_records"] == 0
    assert 150_000 < info["ngrams"] < 200_000 and len(index) == info["ngrams"]


def test_a_planted_question_is_found_and_a_paraphrase_is_not(index, pages):
    page = pages[0]["text"]
    assert index.find(page) is None  # the real page as crawled
    m = index.find(plant(page, QUESTION))
    assert m is not None and (m.eval_set, m.record) == ("gsm8k-test", 0)
    assert m.ngram == " ".join(words(QUESTION)[:13]) and m.ngram.startswith("janet s ducks lay 16 eggs")
    # normalised words: another case, other punctuation and spacing, typographic quotes, accents
    shouted = QUESTION.upper().replace(".", " !").replace("’", "'").replace("Janet", "Jánet")
    assert index.find(plant(page, shouted)) is not None
    assert index.find(plant(page, PARAPHRASE)) is None
    # the answer's text is indexed too, in the form published without calculator annotations
    answer = "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day at the farmer’s market."
    assert index.find(plant(page, answer)) is not None
    # 13 words of it are enough ("Janet’s" is two words), 12 are not
    assert index.find("Janet’s ducks lay 16 eggs per day. She eats three for breakfast") is not None
    assert index.find("Janet’s ducks lay 16 eggs per day. She eats three for") is None


def test_settings_change_what_matches(index):
    # The paraphrase shares no run of 5 words with any GSM8K test problem; 4-grams are too short
    # to mean anything ("how many dollars does" is in problem 685).
    assert all(ContaminationIndex.from_files(DecontaminationConfig(ngram=n)).find(PARAPHRASE) is None for n in (5, 13))
    m = ContaminationIndex.from_files(DecontaminationConfig(ngram=4)).find(PARAPHRASE)
    assert (m.record, m.ngram) == (685, "how many dollars does")
    # Numbers stay numbers by default (GPT-3); normalize_numbers makes other numbers match.
    rec = {"text": "she bought 3 apples and 12 pears at the market on Monday"}
    other = "she bought 4 apples and 15 pears at the market on Monday"
    assert ContaminationIndex.build({"t": [rec]}, DecontaminationConfig(ngram=11)).find(other) is None
    assert ContaminationIndex.build({"t": [rec]}, DecontaminationConfig(ngram=11, normalize_numbers=True)).find(other) is not None


def test_eval_set_files_and_errors(tmp_path):
    f = tmp_path / "my-bench.jsonl"
    f.write_text(json.dumps({"text": " ".join(f"w{i}" for i in range(20))}) + "\nnot json\n" + json.dumps({"x": 1}) + "\n")
    idx = ContaminationIndex.from_files(DecontaminationConfig(eval_sets=[str(f), str(GSM8K_TEST)]))
    assert idx.names == ["my-bench", "gsm8k-test"]
    assert idx.info["my-bench"] == {"records": 3, "unreadable_records": 2, "short_records": 0, "ngrams": 8}
    assert idx.find("and then w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 here").eval_set == "my-bench"
    with pytest.raises(FileNotFoundError, match="decontamination.eval_sets"):
        ContaminationIndex.from_files(DecontaminationConfig(eval_sets=[str(tmp_path / "missing.jsonl")]))


def test_demo_sft_data_against_gsm8k_test(index):
    """gsm8k-chat-train (GSM8K train problems in chat form): 2 of its 449 records share a 13-gram
    with GSM8K test. Both are real overlaps, not normalisation artefacts: record 20 is test
    problem 632's template with other names and numbers, record 406 shares test problem 581's
    sentence "The first movie is 1 hour and 30 minutes long while the second movie ..."."""
    recs = read_records((SAMPLE / "sft" / "gsm8k-chat-train.jsonl").read_bytes())
    hits = {i: index.find(strings_of(r)) for i, r in enumerate(recs)}
    hits = {i: (m.record, m.ngram) for i, m in hits.items() if m is not None}
    assert len(recs) == 449 and sorted(hits) == [20, 406]
    assert hits[20] == (632, "bought stamps at the post office some of the stamps had a snowflake")
    assert hits[406][0] == 581 and hits[406][1].startswith("the first movie is 1 hour and 30 minutes long")
    # the other SFT and preference sets of the sample share nothing with it
    for name in ("sft/self-instruct-seed-tasks.jsonl", "preference/orca-dpo-pairs.jsonl"):
        assert not any(index.find(strings_of(r)) for r in read_records((SAMPLE / name).read_bytes())), name


def test_sft_preparation_drops_contaminated_records(index, tmp_path):
    from tokenizer import TokenizerConfig, save, train
    from training.prepare import prepare_chat_file
    from training.sft import examples_table, record_examples

    train_recs = read_records((SAMPLE / "sft" / "gsm8k-chat-train.jsonl").read_bytes())[:30]
    test_rec = read_records(GSM8K_TEST.read_bytes())[5]
    chat = {"messages": [{"role": "user", "content": test_rec["question"]}, {"role": "assistant", "content": test_rec["answer"]}]}
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*train_recs, chat]))
    tok = train([strings_of(r) for r in train_recs], TokenizerConfig(vocab_size=400))
    save(tok, str(tmp_path / "tok"))
    stats = prepare_chat_file(str(data), str(tmp_path / "run" / "data"), str(tmp_path / "tok" / "tokenizer.json"), 4096, 0.0, 0,
                              record_examples, examples_table, index)
    # record 20 of the train file (test problem 632's template) and the planted test problem
    assert stats["input"] == 31 and stats["dropped"] == {"contamination": 2} and stats["output"] == 29
    assert stats["counters"]["contamination.gsm8k-test"] == 2
    ex = stats["examples"]["contamination.gsm8k-test"]
    assert (ex["file"], ex["record"], ex["eval_record"]) == ("mixed.jsonl", 20, 632)
    assert pq.read_table(tmp_path / "run" / "data" / "mixed.parquet").num_rows == 29
    assert os.listdir(tmp_path / "run" / "data") == ["mixed.parquet"]  # stats beside the data folder
    assert json.loads((tmp_path / "run" / "_stats" / "mixed.json").read_text()) == stats
    # switched off: nothing dropped
    off = prepare_chat_file(str(data), str(tmp_path / "off" / "data"), str(tmp_path / "tok" / "tokenizer.json"), 4096, 0.0, 0,
                            record_examples, examples_table, None)
    assert off["output"] == 31 and not off["dropped"]


def test_filter_drops_a_page_with_a_planted_question(ray_session, pages, tmp_path):
    """Real pages through the filter stage: the one with a GSM8K test problem planted in it is
    dropped as contamination (the set and the n-gram in stats.json), the one with a paraphrase
    is decided by the rules alone; ``decontamination.enabled=false`` keeps the planted page."""
    from curation.schema import documents_to_table
    from curation.filter import FilterConfig
    from pipelines import config
    from pipelines.filter import filter_documents
    from storage import io

    docs = [dict(d) for d in pages]
    docs[0]["text"] = plant(docs[0]["text"], QUESTION)
    docs[1]["text"] = plant(docs[1]["text"], PARAPHRASE)
    io.write_parquet(documents_to_table(docs), str(tmp_path / "in" / "pages.parquet"))
    out, rej = str(tmp_path / "out"), str(tmp_path / "rej")
    cfg = FilterConfig()
    cfg.quality.model = ""  # the heuristic rules decide; no model score needed here
    assert filter_documents([str(tmp_path / "in")], out, cfg, rejects=rej) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["dropped"]["contamination"] == 1 and stats["input"] == stats["output"] + sum(stats["dropped"].values())
    d = stats["decontamination"]
    assert d["enabled"] and d["ngram"] == 13 and d["removed"] == {"gsm8k-test": 1}
    ex = d["examples"]["gsm8k-test"]
    assert ex["id"] == docs[0]["id"] and ex["eval_record"] == 0 and ex["ngram"].startswith("janet s ducks lay 16 eggs")
    rejected = pq.read_table(rej).to_pylist()
    assert [r["id"] for r in rejected if r["metadata"]["filter_reason"] == "contamination"] == [docs[0]["id"]]
    kept = pq.read_table(tmp_path / "out" / "data").column("id").to_pylist()
    assert docs[0]["id"] not in kept
    reason_of_paraphrase = {r["id"]: r["metadata"]["filter_reason"] for r in rejected}.get(docs[1]["id"])
    assert reason_of_paraphrase != "contamination"

    off = config.load(FilterConfig, None, ["quality.model=''", "decontamination.enabled=false"])
    assert filter_documents([str(tmp_path / "in")], out, off) == 0
    stats_off = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert "contamination" not in stats_off["dropped"] and stats_off["output"] == stats["output"] + 1
    assert stats_off["decontamination"] == {"enabled": False}
    assert docs[0]["id"] in pq.read_table(tmp_path / "out" / "data").column("id").to_pylist()


def test_the_quality_cut_is_a_fraction_of_what_decontamination_leaves(ray_session, pages, tmp_path):
    """``quality.top_fraction`` keeps that fraction of the documents that pass every other rule,
    decontamination included: pages the filter drops as contamination are no candidates."""
    import math

    from curation.schema import documents_to_table
    from curation.filter import FilterConfig
    from pipelines.filter import filter_documents
    from storage import io

    docs = [dict(d) for d in pages]
    for d in docs[:3]:
        d["text"] = plant(d["text"], QUESTION)
    with open(SAMPLE / "text" / "cc-main-2019-30-697docs.jsonl.gz", "rb") as f:
        docs += list(read_dolma_jsonl(f, "cc-main-2019-30-697docs.jsonl.gz"))
    io.write_parquet(documents_to_table(docs), str(tmp_path / "in" / "pages.parquet"))
    out = str(tmp_path / "out")
    cfg = FilterConfig()
    assert filter_documents([str(tmp_path / "in")], out, cfg) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["dropped"]["contamination"] >= 2  # planted pages the rules alone would keep
    clean = pq.read_table(tmp_path / "out" / "data").column("metadata").combine_chunks().field("filter").field("quality_score")
    scores = sorted(clean.to_pylist(), reverse=True)
    assert len(scores) == stats["output"] > 50

    cfg.quality.top_fraction = 0.5
    assert filter_documents([str(tmp_path / "in")], out, cfg) == 0
    cut = json.loads((tmp_path / "out" / "stats.json").read_text())
    k = math.ceil(0.5 * len(scores))
    assert cut["quality_cut"] == scores[k - 1] and cut["output"] == k
    assert cut["dropped"]["contamination"] == stats["dropped"]["contamination"]
