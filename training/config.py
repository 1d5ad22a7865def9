"""The training stages' settings, as plain dataclasses: ``TrainConfig`` (pre-training, and the
trainer under every fine-tune), ``FinetuneConfig`` with its two recipes' ``SFTConfig`` and
``DPOConfig``. Nothing here imports torch, so a pipeline's config (``pipelines run --dry-run``,
the command line's checks) loads without it; the code that trains imports them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    # Every path here is a local path or an object-store URI (s3://, gs://, abfs://).
    run_dir: str = "runs/pretrain"
    # Token shards (files or folders) from the tokenize stage.
    data: list[str] = field(default_factory=list)
    # Held-out shards for validation loss; when empty, the last `holdout_shards` data shards.
    val_data: list[str] = field(default_factory=list)
    holdout_shards: int = 1
    model: str = "tiny"
    # Real vocabulary size (before padding); 100,015 for the report's tokenizer.
    vocab_size: int = 100_015
    # Tokens per row; 0: the model config's context (4096 in the report).
    seq_len: int = 0
    # Rows per micro-batch on each rank (memory knob; does not change the maths).
    micro_batch: int = 4
    # Global batch in tokens, a multiple of seq_len x micro_batch x ranks. 7B: 2304 x 4096 (report).
    batch_tokens: int = 2304 * 4096
    batch_auto: bool = False
    # Training length in tokens: sets the schedule (80% / 90% boundaries) and the compute budget.
    train_tokens: int = 2_000_000_000_000
    # Stop early after this many steps (0: run the whole schedule); the schedule is unchanged.
    max_steps: int = 0
    # Report section 2.3: peak 4.2e-4 for 7B; AdamW betas (0.9, 0.95), weight decay 0.1.
    lr: float = 4.2e-4
    lr_auto: bool = False
    warmup_steps: int = 2000
    schedule: str = "multi_step"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    # "auto": bf16 parameters on GPU, fp32 on CPU.
    dtype: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    checkpoint_every: int = 1000
    # Write checkpoints in a background thread (staged to CPU memory first), as the report does
    # ("saved often and asynchronously"); the final checkpoint is always written synchronously.
    async_checkpoint: bool = True
    keep_checkpoints: int = 2
    eval_every: int = 500
    eval_batches: int = 20
    log_every: int = 1
    resume: bool = False
    # A checkpoint folder whose weights start the run (SFT/DPO from a pre-trained model).
    init_from: str = ""
    # Peak FLOP/s of one device for MFU; 0: from the device table (GPU) or measured (CPU).
    peak_flops: float = 0.0
    # Intra-op threads per process on CPU; 0 keeps torch's default. With several processes on
    # one machine, cores / processes (torchrun sets 1) avoids oversubscription.
    cpu_threads: int = 0
    # Build on the meta device and initialise after sharding (no full copy in memory). Always
    # on GPU; on CPU the full model is built from the seed so runs match across world sizes.
    meta_init: bool = False
    progress: bool = True


@dataclass
class FinetuneConfig:
    run_dir: str = "runs/finetune"
    # The checkpoint (or run folder: its latest checkpoint) whose weights start the fine-tune.
    init_from: str = ""
    epochs: int = 1
    lr: float = 1e-5
    # The report's SFT and DPO (section 5): warm-up, then cosine decay (to 10%).
    schedule: str = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    # AdamW of pre-training (report section 2.3); clipping 1.0.
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # Tokens per example row; 0: the starting run's sequence length (what its model was trained
    # on, :func:`context_length`). Longer examples are dropped (too_long) when tokenised.
    seq_len: int = 0
    # Examples per micro-batch per rank; gradient accumulation makes up the recipe's batch.
    micro_batch: int = 4
    # Held-out share of examples for the before/after figures (decided by a hash of each key).
    held_out_fraction: float = 0.05
    checkpoint_every: int = 1000
    eval_every: int = 100
    eval_batches: int = 50
    seed: int = 0
    dtype: str = "auto"
    # Torch threads per worker (0: torch's default); the Ray launcher sets it per worker.
    cpu_threads: int = 0
    progress: bool = True
    # The tokenised example shards (the pipeline stage writes them).
    data: list[str] = field(default_factory=list)

    def step_examples(self) -> int:
        """Examples per optimizer step over all ranks (the recipe's batch size)."""
        raise NotImplementedError


@dataclass
class SFTConfig(FinetuneConfig):
    run_dir: str = "runs/sft"
    # Report section 5.1, the 7B model: "4 epochs", "learning rate 1e-5" (67B: 2 epochs, 5e-6).
    epochs: int = 4
    lr: float = 1e-5
    # Conversations are packed into rows of seq_len tokens (block-diagonal attention);
    # packing=False gives each conversation a row of its own.
    packing: bool = True
    # Rows per optimizer step over all ranks (accumulated); the report gives no SFT batch size.
    batch_rows: int = 32

    def step_examples(self) -> int:
        return self.batch_rows


@dataclass
class DPOConfig(FinetuneConfig):
    run_dir: str = "runs/dpo"
    # DPO's usual temperature: the DPO paper's default (Rafailov et al. 2023, appendix B: "unless
    # noted otherwise, we use beta = 0.1"), also TRL's; the DeepSeek LLM report gives none.
    beta: float = 0.1
    # Report section 5.2: one epoch, "learning rate of 5e-6 and batch size of 512",
    # "warm-up and cosine learning rate scheduler".
    epochs: int = 1
    lr: float = 5e-6
    batch_pairs: int = 512
    # No weight decay on a preference fine-tune (the report gives none; TRL's default is 0).
    weight_decay: float = 0.0
    held_out_fraction: float = 0.1
    # Precomputed reference log-prob shards beside the pair shards (``pipelines.dpo`` writes
    # both); none: the reference runs on the fly.
    reference_data: list[str] = field(default_factory=list)

    def step_examples(self) -> int:
        return self.batch_pairs
