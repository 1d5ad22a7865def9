"""Run a function in a child process with a per-call time limit and a memory cap.

An HTML extractor can hang or blow up on a pathological page (deep nesting, huge tables, regex
back-tracking inside C code that no Python signal can interrupt). As in datatrove's extractor
sandbox, each call goes to a long-lived child process; if it overruns its time limit the child is
killed and replaced, so the page costs one document and a restart, never the worker. The child's
address space is capped (RLIMIT_AS), so a memory explosion becomes a MemoryError there.

The child is a fresh interpreter running :func:`_serve`, speaking length-prefixed
pickles over its stdin/stdout, so it does not depend on how the parent was started (a Ray
worker, a test, a REPL).
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import struct
import subprocess
import sys
from typing import Any

_LEN = struct.Struct("<Q")
_CHILD = "import sys; from curation.extract.sandbox import _serve; _serve(sys.argv[1], int(sys.argv[2]))"


class CallTimedOut(Exception):
    pass


class CallCrashed(Exception):
    pass


def _write(f, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LEN.pack(len(data)) + data)
    f.flush()


def _read_exact(f, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            raise EOFError("child closed its output")
        buf += chunk
    return bytes(buf)


def _read(f) -> Any:
    (n,) = _LEN.unpack(_read_exact(f, _LEN.size))
    return pickle.loads(_read_exact(f, n))


class Sandbox:
    """``sandbox(*args)`` runs ``module:function(*args)`` in the child process."""

    def __init__(self, target: str, timeout_s: float, memory_mb: int | None = None):
        self.target, self.timeout_s, self.memory_mb = target, timeout_s, memory_mb
        self._proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.target, str(self.memory_mb or 0)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None:
                    f.close()
        self._proc = None

    def __call__(self, *args: Any) -> Any:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                self.restarts += 1
            self._kill()
            self._start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            _write(proc.stdin, args)
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
            if not ready:
                self._kill()
                self.restarts += 1
                raise CallTimedOut(f"no result within {self.timeout_s:g} s")
            status, value = _read(proc.stdout)
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError, pickle.UnpicklingError) as e:
            self._kill()
            raise CallCrashed(f"extractor process died: {type(e).__name__}") from None
        if status == "ok":
            return value
        if status == "memory":
            self._kill()  # a process that hit its cap may be in a bad state: start afresh
            raise MemoryError(value)
        raise CallCrashed(value)

    def close(self) -> None:
        self._kill()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _serve(target: str, memory_mb: int) -> None:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the function prints must not corrupt the protocol
    while True:
        try:
            args = _read(stdin)
        except EOFError:
            return
        try:
            _write(stdout, ("ok", fn(*args)))
        except MemoryError:
            _write(stdout, ("memory", "MemoryError"))
        except Exception as e:  # noqa: BLE001 - reported to the caller as this call's failure
            _write(stdout, ("error", f"{type(e).__name__}: {e}"[:300]))
