"""`pipelines run --config <file> --dry-run` on the three shipped configs: the plan of every stage,
no problem where there is none, one line per problem where there are some, and nothing written."""

from __future__ import annotations

import gzip
import uuid

from conftest import REPO

from pipelines.cli import main


def _dry(config: str, *sets: str) -> int:
    return main(["run", "--config", str(REPO / "configs" / config), "--dry-run", *[x for s in sets for x in ("--set", s)]])


def _listing(paths: list[str]) -> bytes:
    return gzip.compress(("\n".join(paths) + "\n").encode())


def test_demo_config_plan(tmp_path, capsys):
    out = tmp_path / "demo"
    assert _dry("demo.yaml", f"output={out}") == 0
    plan = capsys.readouterr().out
    for stage in ("import", "extract", "dedup", "filter", "remix", "train-tokenizer", "tokenize", "pretrain", "sft", "dpo", "generate"):
        assert f" {stage} " in plan, stage
    assert "data/sample/warc (7 files)" in plan and "this process (no Ray resources)" in plan
    assert f"writes   {out}/pretrain" in plan and "config   blocklist.path=data/blocklist.example.txt" in plan
    assert "GSM8K after pretrain, sft, dpo: 40 questions" in plan and "Ray tasks of 8 questions" in plan
    assert "has no checks" not in plan  # every stage of the demo is checked
    assert not out.exists()  # nothing written
    # The eval set is checked like any input.
    assert _dry("demo.yaml", f"output={out}", "eval.data=data/sample/sft/none.jsonl") == 2
    assert "eval.data: data/sample/sft/none.jsonl: no such file" in capsys.readouterr().err


def test_laptop_config_plan_reads_the_dump_listing(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    listing = mirror / "crawl-data" / "CC-MAIN-2024-22" / "warc.paths.gz"
    listing.parent.mkdir(parents=True)
    listing.write_bytes(_listing([f"crawl-data/CC-MAIN-2024-22/segments/s/warc/f{i}.warc.gz" for i in range(4)]))
    assert _dry("laptop.yaml", f"output={tmp_path / 'lap'}", f"extract.cc_base_url={mirror}") == 0
    plan = capsys.readouterr().out
    assert str(listing) in plan and "4 WARC files of CC-MAIN-2024-22 from #0" in plan
    assert "model 125m, seq_len 2048, lr auto, batch auto" in plan
    # Without the listing: one line naming it, exit 2.
    listing.unlink()
    assert _dry("laptop.yaml", f"output={tmp_path / 'lap'}", f"extract.cc_base_url={mirror}") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("run: dry-run:")]
    assert err == [f"run: dry-run: extract: {listing} not found or not reachable (extract.cc_dump / extract.cc_base_url)",
                   "run: dry-run: 1 problem(s); nothing was run"]


def test_cluster_config_plan_against_s3(s3, capsys):
    """configs/cluster.yaml with its bucket names overridden to buckets on the loopback server."""
    out, cc = f"run-{uuid.uuid4().hex[:8]}", f"cc-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(out)
    s3.create_bucket(cc)
    s3.client().put_object(Bucket=cc, Key="crawl-data/CC-MAIN-2024-22/warc.paths.gz", Body=_listing(["crawl-data/x.warc.gz"] * 3))
    sets = (f"output=s3://{out}/deepseek-cc/run-1", f"dedup.index=s3://{out}/deepseek-cc/dedup-index", f"extract.cc_base_url=s3://{cc}/")
    assert _dry("cluster.yaml", *sets) == 0
    plan = capsys.readouterr().out
    assert f"s3://{cc}/crawl-data/CC-MAIN-2024-22/warc.paths.gz" in plan and "2000 WARC files" in plan
    assert plan.count("Ray Train: 8 worker(s) x {'CPU': 1}, x {'CPU': 1, 'GPU': 1} when the cluster has >= 8 GPUs") == 3
    assert "model 1b, seq_len 4096, lr auto, batch auto, 20,000,000,000 tokens, checkpoint every 1000 steps (async)" in plan
    assert s3.keys(out) == [] and s3.keys(cc) == ["crawl-data/CC-MAIN-2024-22/warc.paths.gz"]  # nothing written

    # A misspelt stage setting: the run's config does not load, one line naming the key.
    assert _dry("cluster.yaml", *sets, "filter.config.blocklist.paht=x") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"run: bad config {REPO / 'configs' / 'cluster.yaml'}: unknown config key(s) filter.config.blocklist.paht; known: path"]

    # A missing bucket, a missing input, a missing blocklist, a bad flag value: one line each.
    bad = (f"output=s3://no-such-bucket-{uuid.uuid4().hex[:6]}/run", f"dedup.index=s3://{out}/index", f"extract.cc_base_url=s3://{cc}/",
           "sft.data=[data/sample/sft/none.jsonl]", "filter.config.blocklist.path=data/none.txt", "pretrain.launcher=slurm")
    assert _dry("cluster.yaml", *bad) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("run: dry-run:")]
    assert len(err) == 5, err
    assert "run: dry-run: filter: blocklist.path = data/none.txt: no such file" in err
    assert any("sft.data: data/sample/sft/none.jsonl: no such file or folder" in ln for ln in err)
    assert any("pretrain: bad option" in ln and "slurm" in ln for ln in err)
    assert any("output: s3://no-such-bucket-" in ln and "does not exist" in ln for ln in err)
    assert err[-1] == "run: dry-run: 4 problem(s); nothing was run"


def test_training_sections_are_typed(tmp_path, capsys):
    """pretrain/sft/dpo hold TrainConfig/SFTConfig/DPOConfig under `config:`: a misspelt key, a
    setting the run owns and an unknown launcher each end in one line naming it, exit 2, before
    any stage runs (nothing written)."""
    out = tmp_path / "run"
    cfg = REPO / "configs" / "demo.yaml"
    cases = [("pretrain.config.lrr=1", f"run: bad config {cfg}: unknown config key(s) pretrain.config.lrr; known: activation_checkpointing"),
             ("sft.config.init_from=x", f"run: bad config {cfg}: sft: config gives init_from: in a pipeline run the run sets it"),
             ("dpo.launcher=slurm", f"run: bad config {cfg}: dpo: bad option launcher='slurm'; choose one of auto, inline, torchrun, ray"),
             ("dpo.reference=later", f"run: bad config {cfg}: dpo.reference: 'later' is not one of ('precomputed', 'on_the_fly')")]
    for setting, line in cases:
        assert main(["run", "--config", str(cfg), "--set", f"output={out}", "--set", setting]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(line), (setting, err)
    assert not out.exists()
    # Typed values reach the plan: a number for lr, the scaling law's switch for the batch.
    assert _dry("demo.yaml", f"output={out}", "pretrain.config.lr=6.0e-4", "pretrain.config.batch_auto=true") == 0
    plan = capsys.readouterr().out
    assert "model tiny, seq_len 256, lr 0.0006, batch auto, 491,520 tokens, checkpoint every 40 steps (async)" in plan
    assert "batch_auto=true train_tokens=491520 lr=0.0006" in plan and "config   epochs=3 lr=0.001 seq_len=256 batch_rows=16" in plan
