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
    assert f"writes   {out}/pretrain" in plan and "--set blocklist.path=data/blocklist.example.txt" in plan
    assert not out.exists()  # nothing written


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

    # A missing bucket, a missing input, a misspelt stage option, a bad flag value: one line each.
    bad = (f"output=s3://no-such-bucket-{uuid.uuid4().hex[:6]}/run", f"dedup.index=s3://{out}/index", f"extract.cc_base_url=s3://{cc}/",
           "sft.data=[data/sample/sft/none.jsonl]", "filter.set=[blocklist.paht=x]", "pretrain.launcher=slurm")
    assert _dry("cluster.yaml", *bad) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("run: dry-run:")]
    assert len(err) == 5, err
    assert any("filter: unknown config key(s) blocklist.paht" in ln for ln in err)
    assert any("sft.data: data/sample/sft/none.jsonl: no such file or folder" in ln for ln in err)
    assert any("pretrain: bad option" in ln and "slurm" in ln for ln in err)
    assert any("output: s3://no-such-bucket-" in ln and "does not exist" in ln for ln in err)
    assert err[-1] == "run: dry-run: 4 problem(s); nothing was run"
