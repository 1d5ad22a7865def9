"""Streaming a WARC over HTTP with open_remote vs plain requests vs a local file, side by side.

A 100 MB WARC (the real heritrix-2008 WARC repeated 40 times: a valid multi-member gzip WARC)
served by the test suite's Range-capable local HTTP server on 127.0.0.1.
"""
import hashlib, shutil, sys, threading, time, tracemalloc
from pathlib import Path
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO / "tests"))
import requests
from fastwarc.warc import ArchiveIterator, WarcRecordType
from pipelines import commoncrawl as cc
from tests.test_commoncrawl import _CrawlServer

root = REPO / "build" / "bench-commoncrawl"; root.mkdir(parents=True, exist_ok=True)
src = (REPO / "data/sample/warc/heritrix-2008-archive-org.warc.gz").read_bytes()
big = root / "big.warc.gz"
if not big.exists():
    big.write_bytes(src * 40)
size = big.stat().st_size
server = _CrawlServer(root); threading.Thread(target=server.serve_forever, daemon=True).start()
url = server.base_url + "big.warc.gz"
CH = 1 << 16

def timed(fn, reps=3):
    best = None
    for _ in range(reps):
        server.faults.clear(); t = time.perf_counter(); out = fn(); dt = time.perf_counter() - t
        best = dt if best is None or dt < best else best
    return best, out

def local():
    h = hashlib.sha256()
    with open(big, "rb") as f:
        while c := f.read(CH): h.update(c)
    return h.hexdigest()

def plain():
    h = hashlib.sha256()
    with requests.get(url, stream=True) as r:
        for c in r.iter_content(CH): h.update(c)
    return h.hexdigest()

def remote(faults=()):
    def go():
        server.faults["/big.warc.gz"] = list(faults)
        h = hashlib.sha256()
        with cc.open_remote(url, retries=5, backoff_s=0.0) as f:
            while c := f.read(CH): h.update(c)
            return h.hexdigest(), f.retry_count
    return go

def records(opener):
    n = 0
    with opener() as f:
        for r in ArchiveIterator(f, record_types=WarcRecordType.response):
            r.reader.read(); n += 1
    return n

mb = size / 1e6
t_local, d_local = timed(local)
t_plain, d_plain = timed(plain)
t_remote, (d_remote, _) = timed(remote())
t_cut, (d_cut, retries) = timed(remote(["drop:10000000", "drop:30000000", "503", "drop:20000000"]))
assert d_local == d_plain == d_remote == d_cut
print(f"file: {mb:.1f} MB (heritrix-2008 WARC x40), 64 KiB reads, best of 3")
print(f"local file read            {mb/t_local:8.0f} MB/s")
print(f"requests iter_content      {mb/t_plain:8.0f} MB/s")
print(f"open_remote                {mb/t_remote:8.0f} MB/s   ratio to plain requests {t_plain/t_remote:.2f}")
print(f"open_remote, 3 cuts + 503  {mb/t_cut:8.0f} MB/s   retries={retries}, sha256 identical")
t_fl, n_fl = timed(lambda: records(lambda: open(big, "rb")))
t_fr, n_fr = timed(lambda: records(lambda: cc.open_remote(url)))
assert n_fl == n_fr
print(f"FastWARC over local file   {n_fl/t_fl:8.0f} responses/s ({n_fl} responses)")
print(f"FastWARC over open_remote  {n_fr/t_fr:8.0f} responses/s   ratio {t_fl/t_fr:.2f}")
tracemalloc.start()
with cc.open_remote(url) as f:
    for r in ArchiveIterator(f): pass
peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
print(f"peak Python memory iterating the {mb:.0f} MB stream with FastWARC: {peak/1e6:.2f} MB ({peak/size*100:.2f}% of the file)")
