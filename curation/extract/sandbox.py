"""Run a function in a child process with a per-call time limit and a memory cap.

An HTML extractor can hang or blow up on a pathological page (deep nesting, huge tables, regex
back-tracking inside C code that no Python signal can interrupt). As in datatrove's extractor
sandbox, each call goes to a long-lived child process; if it overruns its time limit the child is
killed and replaced, so the page costs one document and a restart, never the worker. The child's
address space is capped (RLIMIT_AS), so a memory explosion becomes a MemoryError there.

The child is a fresh interpreter running :func:`_serve`, speaking length-prefixed
pickles over its stdin/stdout, so it does not depend on how the parent was started (a Ray
worker, a test, a REPL). :meth:`Sandbox.map` sends a batch of calls in one message and the child
answers each call as it finishes it, so each keeps its own time limit; a call that costs the child
costs only itself, and the rest of the batch goes to a fresh one. Large ``bytes`` arguments (the
pages) travel through a memory buffer both processes map instead: one copy each way, where a pipe costs several copies and a context
switch per 64 KB. On the modern pages of `make bench-extract` (139 KB on average) that took a
page's round trip from about 0.32 to 0.19 ms of CPU, both processes counted.
"""

from __future__ import annotations

import importlib
import mmap
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

_LEN = struct.Struct("<Q")
_CHILD = "import sys; from curation.extract.sandbox import _serve; _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))"
# bytes arguments at least this long go through the shared buffer.
_SHARED_MIN = 16 * 1024


class CallTimedOut(Exception):
    pass


class CallCrashed(Exception):
    pass


@dataclass(frozen=True)
class _Shared:
    """A bytes argument that lies in the shared buffer, at ``offset``; ``size`` is the buffer's."""

    offset: int
    length: int
    size: int


def _write(f, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LEN.pack(len(data)))
    f.write(data)
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


class _Unbuffered:
    """Reads of a pipe that never take more than asked: the parent waits for each answer with
    ``select`` on the pipe, which cannot see answers a buffered reader has already taken in."""

    def __init__(self, f):
        self.fd = f.fileno()

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)


class Sandbox:
    """``sandbox(*args)`` runs ``module:function(*args)`` in the child process."""

    def __init__(self, target: str, timeout_s: float, memory_mb: int | None = None):
        self.target, self.timeout_s, self.memory_mb = target, timeout_s, memory_mb
        self._proc: subprocess.Popen | None = None
        self._buffer: mmap.mmap | None = None
        self._buffer_file = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
        if self._buffer_file is None:
            # An anonymous memory file (Linux), else an unlinked temporary file; grown on demand.
            fd = os.memfd_create("sandbox-args") if hasattr(os, "memfd_create") else os.dup(tempfile.TemporaryFile().fileno())
            self._buffer_file = os.fdopen(fd, "r+b", buffering=0)
        fd = self._buffer_file.fileno()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.target, str(self.memory_mb or 0), str(fd)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, pass_fds=(fd,),
        )

    def _share(self, calls: list[tuple]) -> list[tuple]:
        """``calls`` with their large bytes arguments put into the shared buffer (grown to fit)."""
        need = sum(len(a) for args in calls for a in args if type(a) is bytes and len(a) >= _SHARED_MIN)
        if not need:
            return calls
        if self._buffer is None or len(self._buffer) < need:
            if self._buffer is not None:
                self._buffer.close()
                self._buffer = None
            size = max(1 << 20, 1 << (need - 1).bit_length())
            assert self._buffer_file is not None
            try:
                os.ftruncate(self._buffer_file.fileno(), size)
                self._buffer = mmap.mmap(self._buffer_file.fileno(), size)
            except OSError:
                # No room for the buffer (a file-size limit, no memory): the payloads go through
                # the pipe, more slowly, rather than costing their pages.
                return calls
        out, offset = [], 0
        for args in calls:
            shared = []
            for a in args:
                if type(a) is bytes and len(a) >= _SHARED_MIN:
                    self._buffer[offset : offset + len(a)] = a
                    shared.append(_Shared(offset, len(a), len(self._buffer)))
                    offset += len(a)
                else:
                    shared.append(a)
            out.append(tuple(shared))
        return out

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None:
                    f.close()
        self._proc = None

    def __call__(self, *args: Any) -> Any:
        (outcome,) = self.map([args])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def map(self, calls: list[tuple]) -> list[Any]:
        """Each call's value, or the exception it ends in (:class:`CallTimedOut`, ``MemoryError``,
        :class:`CallCrashed`), in order. The calls go to the child in one message and it answers
        each as soon as it is done, so every call has its own time limit, as if made alone; after
        a call that costs the child (time limit, memory cap, death) the rest go to a fresh one."""
        outcomes: list[Any] = []
        while len(outcomes) < len(calls):
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self.restarts += 1
                self._kill()
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            rest = calls[len(outcomes) :]
            try:
                _write(proc.stdin, self._share(rest))
                for _ in rest:
                    ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
                    if not ready:
                        self._kill()
                        self.restarts += 1
                        outcomes.append(CallTimedOut(f"no result within {self.timeout_s:g} s"))
                        break
                    status, value = _read(_Unbuffered(proc.stdout))
                    if status == "memory":
                        self._kill()  # a process that hit its cap may be in a bad state: start afresh
                        outcomes.append(MemoryError(value))
                        break
                    outcomes.append(value if status == "ok" else CallCrashed(value))
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError, pickle.UnpicklingError) as e:
                self._kill()
                outcomes.append(CallCrashed(f"extractor process died: {type(e).__name__}"))
        return outcomes

    def close(self) -> None:
        self._kill()
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None
        if self._buffer_file is not None:
            self._buffer_file.close()
            self._buffer_file = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _serve(target: str, memory_mb: int, buffer_fd: int = -1) -> None:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the function prints must not corrupt the protocol
    shared: mmap.mmap | None = None
    while True:
        try:
            calls = _read(stdin)
        except EOFError:
            return
        for args in calls:
            try:
                if any(type(a) is _Shared for a in args):
                    size = next(a.size for a in args if type(a) is _Shared)
                    if shared is None or len(shared) != size:
                        if shared is not None:
                            shared.close()
                        shared = mmap.mmap(buffer_fd, size)
                    args = tuple(shared[a.offset : a.offset + a.length] if type(a) is _Shared else a for a in args)
                _write(stdout, ("ok", fn(*args)))
            except MemoryError:
                _write(stdout, ("memory", "MemoryError"))
                break  # the parent replaces this process
            except Exception as e:  # noqa: BLE001 - reported to the caller as this call's failure
                _write(stdout, ("error", f"{type(e).__name__}: {e}"[:300]))
