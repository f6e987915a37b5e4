"""Run a function in a forked child process and take its result back: the second CPU at load.

Loading a big database is CPU work in Python and in hyperscan's compiler,
which one process does on one core; clamd loads on one core too. A
`ForkedCall` runs a function in a child forked from this process (so it
sees everything loaded so far, without pickling its inputs) while this
process goes on with other work, and `result()` returns what it returned,
or raises what it raised.

The result travels pickled through a pipe, numpy arrays and other large
buffers out of band (pickle protocol 5), so they arrive with one copy. A
thread of this process reads the pipe as the child writes, so the child
exits and frees its memory as soon as it is done. A child that dies
without answering (killed, out of memory) raises `ChildFailed`, and the
caller does the work itself: nothing depends on the child succeeding.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

# Switched off by tests that compare both ways, or where forking is not wanted.
ENABLED = True

_OK, _RAISED = 0, 1


class ChildFailed(Exception):
    """The child died or answered nothing usable: do the work here instead."""


def available() -> bool:
    return ENABLED and hasattr(os, "fork")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ForkedCall:
    """`function()` running in a forked child; `result()` waits for it."""

    def __init__(self, function: Callable[[], Any]) -> None:
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise ChildFailed("fork failed") from None
        if pid == 0:
            os.close(read_fd)
            _child(function, write_fd)  # never returns
        os.close(write_fd)
        self._pid = pid
        self._fd = read_fd
        self._message: tuple | None = None
        self._failure: str | None = None
        self._reader = threading.Thread(target=self._read, name="forked-call", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            with os.fdopen(self._fd, "rb", buffering=0) as pipe:
                self._message = _receive(pipe)
        except Exception as exc:  # noqa: BLE001 - reported by result()
            self._failure = f"reading its answer failed: {exc!r}"

    def result(self) -> Any:
        """The function's return value; its exception re-raised; ChildFailed if it died."""
        self._reader.join()
        try:
            _, status = os.waitpid(self._pid, 0)
        except ChildProcessError:
            status = -1
        if self._message is None:
            raise ChildFailed(self._failure or f"child exited with status {status}")
        kind, value = self._message
        if kind == _RAISED:
            raise value
        return value

    def abandon(self) -> None:
        """Stop caring about the answer: end the child and reap it."""
        try:
            os.kill(self._pid, 9)
        except ProcessLookupError:
            pass
        self._reader.join()
        try:
            os.waitpid(self._pid, 0)
        except ChildProcessError:
            pass


def _child(function: Callable[[], Any], fd: int) -> None:
    status = 1
    try:
        try:
            message = (_OK, function())
        except BaseException as exc:  # noqa: BLE001 - sent to the parent, raised there
            message = (_RAISED, exc)
        with os.fdopen(fd, "wb", buffering=0) as pipe:
            try:
                _send(pipe, message)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                _send(pipe, (_RAISED, ChildFailed(f"unpicklable answer: {exc!r}")))
        status = 0
    finally:
        os._exit(status)


def _send(pipe, message) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]
    pipe.write(len(head).to_bytes(8, "little") + len(views).to_bytes(8, "little"))
    pipe.write(b"".join(len(view).to_bytes(8, "little") for view in views))
    _write_all(pipe, memoryview(head))
    for view in views:
        _write_all(pipe, view)


def _write_all(pipe, view: memoryview) -> None:
    while len(view):
        written = pipe.write(view)
        view = view[written:]


def _receive(pipe):
    header = _read_exact(pipe, 16)
    head_size = int.from_bytes(header[:8], "little")
    count = int.from_bytes(header[8:], "little")
    sizes = _read_exact(pipe, 8 * count)
    sizes = [int.from_bytes(sizes[8 * i:8 * i + 8], "little") for i in range(count)]
    head = _read_exact(pipe, head_size)
    buffers = [_read_exact(pipe, size) for size in sizes]
    return pickle.loads(head, buffers=buffers)


def _read_exact(pipe, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    done = 0
    while done < size:
        got = pipe.readinto(view[done:])
        if not got:
            raise EOFError(f"answer cut short at {done} of {size} bytes")
        done += got
    return data
