"""The typed config of ``python -m pipelines run``: one file describes a whole run.

Every section holds the options of one stage; a stage's own config (its dataclass, e.g.
``curation.filter.FilterConfig``) is reached through ``set:`` lists of ``key=value`` strings,
passed to that stage as ``--set`` overrides, so this file never copies a stage's defaults. Defaults
here follow the recipe (DeepSeek LLM report, via each stage's own defaults) except where a comment
says the value is a run-size choice. Filled by :func:`pipelines.config.load` (``yaml.safe_load``,
unknown keys are errors that name the key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# The order in which ``run`` executes the stages; ``stages:`` may list a prefix or a subset.
STAGE_ORDER = ("import", "extract", "dedup", "filter", "remix", "train-tokenizer", "tokenize", "pretrain", "sft", "dpo", "eval", "generate")


@dataclass
class ImportSection:
    # Already-extracted documents in Dolma/CCNet JSONL(.gz) (e.g. data/sample/text), turned into
    # document shards under <output>/imported and deduplicated together with the extracted pages.
    # Empty: nothing imported.
    inputs: list[str] = field(default_factory=list)


@dataclass
class ExtractSection:
    # WARC/WET/ARC files, globs or folders; local paths or object-store URIs (s3://, gs://).
    inputs: list[str] = field(default_factory=list)
    # Common Crawl input instead of (or besides) files: see `pipelines extract --help`.
    cc_dump: Optional[str] = None
    cc_base_url: Optional[str] = None
    cc_first: int = 0
    cc_files: Optional[int] = None
    # Files processed at once (None: one per CPU of the Ray cluster).
    workers: Optional[int] = None
    # Overrides of curation.extract.ExtractConfig, e.g. ["timeout_s=10"].
    set: list[str] = field(default_factory=list)


@dataclass
class DedupSection:
    # Persistent band-key index (None: <output>/dedup/index). Point several runs at one index to
    # deduplicate a new dump against the old ones (the report's cross-dump dedup).
    index: Optional[str] = None
    # Overrides of the dedup config (threshold, ngram, bands, rows, keep, partitions,
    # line_repeat_min ...): defaults are the report's (see `pipelines dedup --help`).
    set: list[str] = field(default_factory=list)


@dataclass
class FilterSection:
    workers: Optional[int] = None
    # Overrides of curation.filter.FilterConfig, e.g. ["blocklist.path=data/blocklist.example.txt"].
    set: list[str] = field(default_factory=list)


@dataclass
class RemixSection:
    workers: Optional[int] = None
    # Overrides of curation.remix.RemixConfig (domain weights, epoch cap, shard size ...).
    set: list[str] = field(default_factory=list)


@dataclass
class TokenizerSection:
    # Ordinary tokens of the BPE; the report's is 100,000 (DeepSeek LLM §2.1). A small corpus
    # cannot fill that many merges: the demo's ~3 MB of text takes a few thousand.
    vocab_size: int = 100_000
    # Further overrides of tokenizer training / tokenize configs.
    set: list[str] = field(default_factory=list)
    tokenize_set: list[str] = field(default_factory=list)


@dataclass
class TrainLaunch:
    # Data-parallel training processes, and how they start: auto = Ray Train when the run joins a
    # cluster (RAY_ADDRESS), else torchrun for nproc > 1, else in this process.
    nproc: int = 1
    launcher: str = "auto"
    # Ray Train: restarts of the worker group after a worker dies; each restart resumes from the
    # run's last complete checkpoint.
    max_failures: int = 3


@dataclass
class PretrainSection(TrainLaunch):
    # Named model config (training.model): tiny (CPU tests), 125m, 1b, 7b, 67b (the report's).
    model: str = "tiny"
    # Run-size choices; None keeps training.trainer.TrainConfig's default (the report's values).
    seq_len: Optional[int] = None
    micro_batch: Optional[int] = None
    batch: Optional[str] = None  # global batch in tokens, or "auto" (the report's scaling law)
    lr: Optional[str] = None  # peak learning rate, or "auto" (the report's scaling law)
    train_tokens: Optional[int] = None
    max_steps: Optional[int] = None
    warmup_steps: Optional[int] = None
    checkpoint_every: Optional[int] = None
    eval_every: Optional[int] = None
    set: list[str] = field(default_factory=list)


@dataclass
class SFTSection(TrainLaunch):
    # Chat data (JSONL/Parquet files or folders); the recipe's defaults live in training.sft.SFTConfig.
    data: list[str] = field(default_factory=lambda: ["data/sample/sft"])
    # The first N records of each data file only (a run-size choice for CPU demos; None: all).
    max_records: Optional[int] = None
    epochs: Optional[int] = None
    lr: Optional[float] = None
    micro_batch: Optional[int] = None
    seq_len: Optional[int] = None
    batch_rows: Optional[int] = None
    set: list[str] = field(default_factory=list)


@dataclass
class DPOSection(TrainLaunch):
    data: list[str] = field(default_factory=lambda: ["data/sample/preference"])
    # The first N records of each data file only (a run-size choice for CPU demos; None: all).
    max_records: Optional[int] = None
    epochs: Optional[int] = None
    lr: Optional[float] = None
    micro_batch: Optional[int] = None
    batch_pairs: Optional[int] = None
    beta: Optional[float] = None  # None: 0.1, the DPO paper's and training.dpo.DPOConfig's
    set: list[str] = field(default_factory=list)


@dataclass
class EvalSection:
    # GSM8K test scored after each training stage that finished (pretrain, sft, dpo), by
    # `pipelines eval` (greedy, zero-shot, the final number compared); shown in the report.
    data: str = "data/sample/sft/gsm8k-test.jsonl"
    # The first N questions (None: all 1,319): a run-size choice.
    limit: Optional[int] = None
    max_new_tokens: int = 256
    # The prompt: an optional system turn, and the user turn ({question} is the question).
    system: Optional[str] = None
    template: str = "{question}"
    chunk: int = 8  # questions per Ray task
    device: str = "cpu"  # cpu: Ray tasks; cuda: in the driver, on its GPU


@dataclass
class GenerateSection:
    # The closing proof of life: one answer from the final (DPO) model, saved to <output>/answer.json.
    prompt: str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
    max_new_tokens: int = 64
    temperature: float = 0.0  # greedy: the same answer on every run
    seed: int = 0


@dataclass
class PipelineConfig:
    # Run folder, a local path or an object-store URI (s3://, gs://, abfs://): every stage writes
    # <output>/<stage>, and the run ends with <output>/report.json and report.html.
    output: str = "runs/demo"
    # Stages to run, in STAGE_ORDER (empty: all). A later stage needs the earlier ones' outputs.
    stages: list[str] = field(default_factory=list)
    # A stage that names unreadable inputs (failed_files) still lets the run go on when False;
    # True stops the run there (its outputs stay, a re-run resumes after fixing the input).
    stop_on_failed_inputs: bool = False
    # CPUs of the embedded local Ray instance (None: all); ignored when joining RAY_ADDRESS.
    num_cpus: Optional[int] = None
    import_jsonl: ImportSection = field(default_factory=ImportSection)
    extract: ExtractSection = field(default_factory=ExtractSection)
    dedup: DedupSection = field(default_factory=DedupSection)
    filter: FilterSection = field(default_factory=FilterSection)
    remix: RemixSection = field(default_factory=RemixSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    sft: SFTSection = field(default_factory=SFTSection)
    dpo: DPOSection = field(default_factory=DPOSection)
    eval: EvalSection = field(default_factory=EvalSection)
    generate: GenerateSection = field(default_factory=GenerateSection)
