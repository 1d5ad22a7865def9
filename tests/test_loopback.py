"""The embedded local Ray listens on loopback only: a stage run as a user runs it
(``python -m pipelines extract``, no ``RAY_ADDRESS``) opens no port to the network."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

import psutil

from conftest import REPO, SAMPLE
from raycluster import free_port

# The largest sample WARC (822 records): the stage runs a few seconds after Ray is up.
WARC = SAMPLE / "warc" / "heritrix-2008-archive-org.warc.gz"


def _ray_tree(leader: int) -> list[psutil.Process]:
    """Every process of the stage's Ray instance: the stage's descendants, and anything left in
    its session (it starts in a session of its own, so a reparented Ray process is still found)."""
    procs = {}
    try:
        procs = {p.pid: p for p in psutil.Process(leader).children(recursive=True)}
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == leader:
                procs[p.pid] = p
        except (ProcessLookupError, PermissionError):
            pass
    procs.pop(leader, None)
    return list(procs.values())


def _listeners(pids: set[int]) -> dict[tuple[str, int], str]:
    """Listening TCP sockets of ``pids``: (address, port) -> process name."""
    names = {}
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            names[(c.laddr.ip, c.laddr.port)] = _name(c.pid)
    return names


def _name(pid: int) -> str:
    """``gcs_server``, ``ray::IDLE``, or a Python process's script (``monitor.py``)."""
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        return "?"
    if argv and "python" in os.path.basename(argv[0]):
        return next((os.path.basename(a) for a in argv[1:] if a.endswith(".py")), " ".join(argv[1:3]))
    return os.path.basename(argv[0]) if argv else "?"


def _loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (a dual-stack socket's
    ``::ffff:127.0.0.1``, as Ray's gRPC servers bind)."""
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def test_stage_on_embedded_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # The autoscaler's and the dashboard's metrics servers take fixed ports (44217, 44227); another
    # Ray instance on this machine may hold them, and then ours run without. Free ports make
    # sure both are started, and checked, here.
    env["AUTOSCALER_METRIC_PORT"], env["DASHBOARD_METRIC_PORT"] = str(free_port()), str(free_port())
    cmd = [sys.executable, "-m", "pipelines", "extract", "--input", str(WARC), "--output", str(tmp_path / "out")]
    log = open(tmp_path / "stage.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[tuple[str, int], str] = {}
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            for sock, name in _listeners({p.pid for p in _ray_tree(proc.pid)} | {proc.pid}).items():
                if seen.get(sock, "?") == "?":  # a process on its way out has no command line left
                    seen[sock] = name
            time.sleep(0.2)
        assert proc.poll() is not None, "the stage did not finish within 120 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait()
        # Whatever of this instance outlived its driver (its own session) is ours to end.
        for p in _ray_tree(proc.pid):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    assert proc.returncode == 0, (tmp_path / "stage.log").read_text()[-2000:]
    table = "\n".join(f"  {ip}:{port}  {name}" for (ip, port), name in sorted(seen.items(), key=lambda kv: kv[1]))
    print(f"listening sockets of the stage's Ray processes:\n{table}")
    open_to_network = {k: v for k, v in seen.items() if not _loopback(k[0])}
    assert not open_to_network, f"listening beyond loopback:\n{table}"
    # The check cannot pass on an empty sample: each of Ray's servers must have been seen.
    servers = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "monitor.py", "dashboard.py"}
    missing = servers - set(seen.values())
    assert not missing, f"not seen listening: {sorted(missing)}; seen:\n{table}"
