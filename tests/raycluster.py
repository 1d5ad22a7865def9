"""A real Ray cluster on this machine for tests: ``ray start --head`` (and more nodes with
``ray start --address``), every port free and on loopback, each node in its own process group
so stopping it never touches another Ray instance (``ray stop`` would stop them all)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


# Worker ports come from a fixed block below the kernel's ephemeral range (32768-60999 on Linux),
# where free_port() never draws, so a node's other ports cannot fall inside its worker range.
_WORKER_BLOCK = 20000
_nodes_started = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    global _nodes_started
    lo = _WORKER_BLOCK + 200 * (_nodes_started % 50)
    _nodes_started += 1
    return [
        f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--min-worker-port={lo}", f"--max-worker-port={lo + 199}",
    ]


class RayCluster:
    def __init__(self, head_cpus: int = 1, resources: str | None = None):
        self.temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        # Token authentication stays on, with a token of this cluster's own: a fresh machine has
        # no ~/.ray/auth_token (only a local ray.init() writes one), and `ray start` needs one.
        token = Path(self.temp) / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
                        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            self.env.pop(name, None)
        self.procs: list[subprocess.Popen] = []
        cmd = [
            str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}", f"--num-cpus={head_cpus}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}", f"--temp-dir={self.temp}", "--disable-usage-stats",
            *_node_ports(),
        ]
        if resources:
            cmd.append(f"--resources={resources}")
        self._spawn(cmd)
        self._wait_dashboard()

    def _spawn(self, cmd: list[str]) -> None:
        log = open(Path(self.temp) / f"node{len(self.procs)}.log", "wb")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def add_node(self, cpus: int = 1, resources: str | None = None) -> None:
        cmd = [
            str(BIN / "ray"), "start", "--block", f"--address={self.address}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}", "--disable-usage-stats", *_node_ports(),
        ]
        if resources:
            cmd.append(f"--resources={resources}")
        self._spawn(cmd)

    def _wait_dashboard(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[0].poll() is not None:
                raise RuntimeError(f"ray start --head exited: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers (401 without the auth token): it is up
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"Ray dashboard did not come up: {self.log()}")

    def log(self) -> str:
        return "".join(p.read_text(errors="replace")[-2000:] for p in sorted(Path(self.temp).glob("node*.log")))

    def submit(self, *entrypoint: str, cwd: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``ray job submit`` with the project as working dir; waits for the job to finish."""
        return subprocess.run(self._submit_cmd(entrypoint), cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def start_job(self, *entrypoint: str, cwd: str, log: Path) -> subprocess.Popen:
        """``ray job submit`` as :meth:`submit`, in the background (stdout and stderr into ``log``),
        so a test can act on the cluster while the job runs; ``wait()`` it."""
        return subprocess.Popen(self._submit_cmd(entrypoint), cwd=cwd, env=self.env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def _submit_cmd(self, entrypoint: tuple[str, ...]) -> list[str]:
        return [
            str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--working-dir", ".",
            "--runtime-env-json", '{"excludes": [".venv", ".git", "out", "runs", "build", ".cache", "*.egg-info"]}',
            "--", *entrypoint,
        ]

    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        # Ray's daemons may have left the group: end every process that lives in our temp dir.
        subprocess.run(["pkill", "-9", "-f", self.temp], check=False)
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> "RayCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
