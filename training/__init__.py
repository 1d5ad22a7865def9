"""Compact trainer: a DeepSeek-LLM-style decoder, FSDP2, one training loop.

Plain library code: nothing here imports ``ray`` or ``pipelines``. The launchers live in
``pipelines/pretrain.py``. Public API (kept stable; SFT/DPO build on it):

Model (``training.model``)
    ``ModelConfig`` (frozen dataclass), ``CONFIGS`` / ``model_config(name, **overrides)`` for
    ``tiny``, ``125m``, ``1b``, ``7b``, ``67b``; ``Transformer(cfg)`` with
    ``forward(input_ids, *, position_ids=None, segment_ids=None, padding_mask=None, cache=None) -> logits``
    of shape (B, T, cfg.padded_vocab_size); ``cache=KVCache(n_layers)`` decodes incrementally
    (``training.generate``); ``build_on_meta(cfg)``, ``num_params``,
    ``flops_per_token(cfg, seq_len)``, ``report_flops_per_token``.

Parallelism (``training.parallelize``)
    ``init_distributed() -> DistEnv`` (rank, world size, device; gloo on CPU, NCCL on GPU; works
    alone, under torchrun and inside a Ray Train worker), ``parallelize(model, env, cfg)``
    applies activation checkpointing, ``torch.compile`` and FSDP2 ``fully_shard`` per block and
    at the root (bf16 params + fp32 reduce on GPU, fp32 on CPU).

Data (``training.data``)
    ``TokenShardLoader(paths, seq_len, micro_batch, rank, world_size, seed)``: reads the tokenize
    stage's Parquet shards (``id``, ``input_ids`` list<uint32>), packs documents into rows of
    ``seq_len + 1`` tokens, shards rows by rank, shuffles deterministically from the seed.
    ``next_batch() -> dict`` with ``input_ids`` and ``labels`` (B, T) int64 tensors
    (``labels`` = -100 where no loss is taken); ``state_dict()`` / ``load_state_dict()``.
    Any object with ``next_batch()``, ``state_dict()`` and ``load_state_dict()`` is a data source;
    a batch dict may also carry ``position_ids``, ``segment_ids``, ``padding_mask`` (passed to the
    model by the default loss) or anything a custom loss needs.

Loss (``training.trainer``)
    ``LossFn = Callable[[model, batch], tuple[loss_sum, weight] | tuple[loss_sum, weight, metrics]]``:
    ``loss_sum`` is a scalar tensor summed over the micro-batch's units (tokens for LM, pairs for
    DPO), ``weight`` their number (int or tensor). The loop divides by the total weight of the
    whole global batch (all micro-batches, all ranks), so gradient accumulation and data
    parallelism give the loss of one big batch. ``metrics`` (dict of 0-d tensors or floats, summed
    like ``loss_sum`` on the device and read once per step, divided by the weight) go to the log. Default: ``causal_lm_loss``
    (cross-entropy on ``labels`` != -100).

Settings (``training.config``; no torch import, so a pipeline's config loads without it)
    ``TrainConfig``, ``FinetuneConfig``, ``SFTConfig``, ``DPOConfig``.

Training loop (``training.trainer``)
    ``TrainConfig`` (typed dataclass, recipe defaults with sources: AdamW 0.9/0.95, wd 0.1 not on
    norms/biases, clip 1.0, multi-step LR, batch in tokens, checkpoint/eval/log intervals,
    ``init_from`` to start from a pre-trained checkpoint's weights).
    ``train(cfg, *, loader=None, val_loader=None, loss_fn=None) -> dict`` runs in every process
    (call ``init_distributed`` first or let ``train`` do it); it builds a ``Trainer``, whose
    model, optimizer, schedule, loader and counters are ``Stateful``; it builds the model, applies
    ``parallelize``, builds AdamW + the schedule, resumes from the latest complete checkpoint when
    ``cfg.resume``, trains, evaluates, logs and checkpoints (asynchronously by default). ``main(config_dict)`` is the
    per-worker entry the launchers call.

Optimisation (``training.optim``, ``training.scaling``)
    ``build_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95))`` (AdamW, decay only on
    matrices); ``lr_at(step, peak_lr, total_steps, warmup_steps, schedule="multi_step")`` and the
    stateful ``Schedule`` for ``multi_step`` (default), ``cosine`` and ``constant``.
    ``optimal_lr(C)``, ``optimal_batch_tokens(C)``, ``optimal_model_data(C)``,
    ``choose_hyperparameters(flops_per_token, train_tokens, seq_len)`` for ``--lr auto --batch auto``.

Checkpoints (``training.checkpoint``)
    ``<run>/checkpoints/step-XXXXXXXX/`` written by ``torch.distributed.checkpoint`` (sharded),
    every file straight to its final name (local disk or object store: no rename), and
    ``manifest.json`` (step, trainer state, file sizes) written last: a checkpoint is complete
    exactly when it has one. ``latest_checkpoint(run_dir)``, ``list_checkpoints`` (complete only),
    ``is_complete(path)``; ``Checkpointer(run_dir, {"train_state": trainer, "model": ModelState(m),
    "optimizer": OptimizerState(m, opt), "schedule": ..., "loader": ...})`` saves (``save(step)``,
    asynchronously by default) and restores (``load(path)``) every ``Stateful`` part in one call:
    the sharded ones through DCP, the replicated ones into the manifest. ``load_model_weights(model,
    ckpt_dir)`` loads only the weights (plain or FSDP model, any world size) - what SFT/DPO use to
    start from a pre-trained model; ``load_model(ckpt_or_run)`` a plain model in eval mode.
    A path that is not a usable checkpoint raises ``CheckpointError`` (a ``storage.errors.UserError``).
    ``training.export``: ``load_trained(ckpt_or_run)`` (a plain model from a run's checkpoint) and
    ``export_hf(model, out_dir, tokenizer_path, bos_id, eos_id)`` write the Hugging Face Llama
    format (``python -m training.export <ckpt or run> <out> --tokenizer <dir>``).

Fine-tuning (``training.finetune``, recipes ``training.sft.SFT`` and ``training.dpo.DPO``)
    ``FinetuneConfig`` (the fields every fine-tune shares; ``SFTConfig``/``DPOConfig`` extend
    it), ``EpochLoader`` (``ChatLoader``/``PairLoader``), ``train_config``, ``finetune(recipe)``
    (held-out before, training, held-out after, ``<run>/<name>.json``) and ``main(recipe, config)``.
    ``training.prepare.prepare_chat_file`` turns one chat file into a tokenised example shard (the
    recipe's ``record_examples``, ``too_long`` and ``contamination`` drops, a hashed held-out share);
    ``check_tokenizer`` checks the tokenizer against the starting checkpoint.

Generation (``training.generate``)
    ``generate`` (KV cache; greedy, temperature, top-p), ``stream_answer`` and ``chat`` (the report's
    chat format, streamed); the repetition ratio: ``read_prompts``, ``repetition_rows``,
    ``repetition_ratio``. ``training.evaluate``: GSM8K scoring, ``parameter_count(checkpoint)``.

Paths
    Every path (token shards, tokenizer, run folder, ``init_from``, SFT/DPO data) is a local path
    or an object-store URI, read and written through ``storage.io``.

Launchers (``pipelines/pretrain.py``)
    ``launch(config_dict, nproc, launcher, entry_module="training.trainer", max_failures=3)`` makes
    the config's paths absolute (URIs as they are), then runs ``entry_module.main(config_dict)``
    inline, under torchrun, or in Ray Train's TorchTrainer (``RAY_ADDRESS``; a dead worker restarts
    the group, which resumes from the last complete checkpoint); an entry module also runs
    ``main(<its JSON config file>)`` as ``__main__``.

Logs
    ``<run>/log.jsonl``: one JSON object per step (step, tokens, loss, lr, grad_norm, tokens_per_s,
    mfu) and per evaluation (val_loss); ``<run>/config.json``; ``python -m pipelines plot-run
    <run>`` draws loss and LR as PNG.
"""
