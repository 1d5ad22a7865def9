"""The typed config of ``python -m pipelines run``: one file describes a whole run.

Every section holds that stage's run options (inputs, workers, index, ``cc_*``; a training
stage's launch: nproc, launcher, max_failures) and, under ``config:``, the stage's own config
dataclass (e.g. ``filter.config`` is a ``curation.filter.FilterConfig``, ``pretrain.config`` a
``training.config.TrainConfig``), so this file never copies a stage's defaults and ``pipelines
run`` hands each stage its typed config. Any value is also settable from the command line with a
dotted key: ``--set filter.config.blocklist.path=x``. Defaults here follow the recipe (DeepSeek
LLM report, via each stage's own defaults) except where a comment says the value is a run-size
choice. Filled by :func:`load` (``yaml.safe_load``, unknown keys are errors that name the key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from curation.decontam import DecontaminationConfig
from curation.dedup import DedupConfig
from curation.extract import ExtractConfig
from curation.filter import FilterConfig
from curation.filter.config import PRESETS
from curation.remix import RemixConfig
from pipelines import config as config_mod
from pipelines.pretrain import Launch
from tokenizer import TokenizerConfig
from tokenizer.shards import TokenizeConfig
from training.config import DPOConfig, SFTConfig, TrainConfig

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
    # Common Crawl's index (columnar Parquet or CDXJ files, local or on an object store): only the
    # records it selects are read, by byte ranges (of the cc_dump range's files when one is
    # given). The selection's settings are config.cc_index; its languages are the filter's.
    cc_index: list[str] = field(default_factory=list)
    # Files processed at once (None: one per CPU of the Ray cluster).
    workers: Optional[int] = None
    # The extractor's cheap pre-pass (curation/extract/prefilter.py): pages that cannot pass the
    # filter's language and length rules are counted (prefilter_language, prefilter_short) and
    # not extracted. It takes the filter's own languages and minimum length
    # (filter.config.language.keep, filter.config.gopher_quality.min_words), so they are set once,
    # for both stages.
    prefilter: bool = False
    # curation.extract.ExtractConfig, e.g. {timeout_s: 10}; its prefilter.enabled/languages/
    # min_words come from `prefilter` and the filter's config, not from here.
    config: ExtractConfig = field(default_factory=ExtractConfig)


@dataclass
class DedupSection:
    # Document shards (Parquet in curation.schema's document schema: files, globs or folders)
    # deduplicated with the extracted and imported documents: a run can start from shards another
    # run or pipeline wrote (stages: [dedup, filter, ...]).
    inputs: list[str] = field(default_factory=list)
    # Persistent band-key index (None: <output>/dedup/index). Point several runs at one index to
    # deduplicate a new dump against the old ones (the report's cross-dump dedup).
    index: Optional[str] = None
    # curation.dedup.DedupConfig (threshold, shingles.ngram, minhash.bands/rows, keep, partitions,
    # line_repeat_min ...): defaults are the report's (see `pipelines dedup --help`).
    config: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class FilterSection:
    workers: Optional[int] = None
    # curation.filter.FilterConfig, e.g. {blocklist: {path: data/blocklist.example.txt}};
    # `preset` applies that preset's settings under the ones given here (as `pipelines filter`).
    config: FilterConfig = field(default_factory=FilterConfig)


@dataclass
class RemixSection:
    workers: Optional[int] = None
    # curation.remix.RemixConfig (domain weights, epoch cap, shard size ...).
    config: RemixConfig = field(default_factory=RemixConfig)


@dataclass
class TokenizerSection:
    # tokenizer.TokenizerConfig, the BPE's training (train-tokenizer). Its vocab_size, ordinary
    # tokens, is the report's 100,000 (DeepSeek LLM §2.1); a small corpus cannot fill that many
    # merges: the demo's ~3 MB of text takes a few thousand.
    config: TokenizerConfig = field(default_factory=TokenizerConfig)
    # tokenizer.shards.TokenizeConfig, the tokenize stage's.
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)


@dataclass
class PretrainSection(Launch):
    # nproc, launcher (auto, inline, torchrun, ray), max_failures: pipelines.pretrain.Launch.
    # training.config.TrainConfig, e.g. {model: tiny, seq_len: 256, batch_tokens: 4096, lr: 3.0e-3};
    # batch_auto / lr_auto: true take the report's scaling laws instead. Defaults are the report's;
    # run_dir, data, vocab_size and resume are the run's own (its folders, its tokenizer, a
    # checkpoint found there), not set here.
    config: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class FinetuneSection(Launch):
    # The first N records of each data file only (a run-size choice for CPU demos; None: all).
    max_records: Optional[int] = None
    # curation.decontam.DecontaminationConfig: records sharing a 13-gram with an evaluation set
    # (GSM8K test by default) are dropped as `contamination`; {enabled: false} turns it off.
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)


@dataclass
class SFTSection(FinetuneSection):
    # Chat data (JSONL/Parquet files or folders).
    data: list[str] = field(default_factory=lambda: ["data/sample/sft"])
    # training.config.SFTConfig (epochs, lr, seq_len, batch_rows, packing ...), the report's
    # defaults; run_dir, init_from and data are the run's own.
    config: SFTConfig = field(default_factory=SFTConfig)


@dataclass
class DPOSection(FinetuneSection):
    data: list[str] = field(default_factory=lambda: ["data/sample/preference"])
    # The reference log-probs: precomputed by Ray tasks up front, or on_the_fly in every step.
    reference: Literal["precomputed", "on_the_fly"] = "precomputed"
    # training.config.DPOConfig (epochs, lr, beta, batch_pairs ...); run_dir, init_from, data and
    # reference_data are the run's own.
    config: DPOConfig = field(default_factory=DPOConfig)


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


def load(path: str | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """The run's config from a YAML file and ``--set`` overrides; the filter's ``preset``
    settings go under the file's and the overrides' (as :func:`pipelines.filter.load_config`)."""
    cfg = config_mod.load(PipelineConfig, path, overrides)
    preset = cfg.filter.config.preset
    if preset not in PRESETS:
        raise config_mod.ConfigError(f"filter.config.preset: {preset!r} is not a preset; choose one of {', '.join(PRESETS)}")
    settings = PRESETS[preset]["settings"]
    if not settings:
        return cfg
    return config_mod.load(PipelineConfig, path, overrides, defaults={f"filter.config.{k}": v for k, v in settings.items()})
