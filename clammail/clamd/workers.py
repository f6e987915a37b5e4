"""Scan worker processes: forked after the database is loaded, one job at a time.

Python threads do not scan in parallel, so the daemon scans in processes.
Each `WorkerPool` is one generation: an engine loaded in the daemon process,
then `size` processes forked from it, so the compiled database is shared
copy-on-write. A reload builds a new pool; the old one finishes its jobs and
is closed.

The parent talks to a worker over a socketpair: a request is a pickled tuple
(with a file descriptor attached for FILDES and INSTREAM), the answer is a
sequence of pickled messages ending with ("done", ...). A worker that dies
in the middle of a job is replaced; the job ends with `WorkerLost`.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import logging
import os
import pickle
import signal
import socket
import struct
import time
import traceback
from collections.abc import AsyncIterator, Callable

from clammail.clamd import pathscan
from clammail.engine import Engine
from clammail.unpack import preload_unpackers

log = logging.getLogger("clammail.daemon")

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 16 * 1024 * 1024

# Switches turned off for RAWSCAN: the documented "raw" scan, with archive
# and every other special-format support disabled.
RAW_SWITCHES = (
    "ScanArchive", "ScanMail", "ScanOLE2", "ScanPDF", "ScanHTML", "ScanPE", "ScanELF",
    "ScanSWF", "ScanXMLDOCS", "ScanHWP3", "ScanOneNote", "ScanImage",
)

# What a client is told when the engine failed on an object (a bug, never a verdict).
ENGINE_FAILURE = "Scan failed (internal error)"


class WorkerLost(Exception):
    """The worker running a job died."""


# -- the worker side ------------------------------------------------------


def _send(sock: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv_request(sock: socket.socket) -> tuple[object, list[int]] | None:
    header, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 1)
    if not header:
        return None
    if len(header) < _HEADER.size:
        rest = _recv_exact(sock, _HEADER.size - len(header))
        if rest is None:
            return None
        header += rest
    (size,) = _HEADER.unpack(header)
    body = _recv_exact(sock, size)
    if body is None:
        return None
    return pickle.loads(body), list(fds)


class _Scanner:
    """The engines one worker uses: the configured one and its RAWSCAN twin."""

    def __init__(self, engine: Engine, walk_options: pathscan.WalkOptions):
        self.engine = engine
        self.walk_options = walk_options
        self._raw: Engine | None = None

    def engine_for(self, raw: bool) -> Engine:
        if not raw:
            return self.engine
        if self._raw is None:
            # The same compiled matchers with the container switches off.
            self._raw = self.engine.with_options({name: False for name in RAW_SWITCHES})
        return self._raw

    def scan_fd(self, fd: int, name: str | None, allmatch: bool, raw: bool = False):
        try:
            result = self.engine_for(raw).scan_fd(fd, name=name, allmatch=allmatch)
        except Exception:  # noqa: BLE001 - a bug in the engine must not kill the daemon
            log.error("engine failure on %s:\n%s", name, traceback.format_exc())
            return [], ENGINE_FAILURE, 0, "", 0
        md5, size = "", 0
        if result.detections:
            md5, size = _md5_of(fd)
        return result.detections, result.error, result.scanned_bytes, md5, size

    def scan_path(self, path: str, allmatch: bool, raw: bool = False):
        """One file by path: (detections, error reply or None, md5, size)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            return [], pathscan.open_error_reply(exc), "", 0
        try:
            found, error, _, md5, size = self.scan_fd(fd, path, allmatch, raw)
        finally:
            os.close(fd)
        return found, (f"{error} ERROR" if error else None), md5, size


def _md5_of(fd: int) -> tuple[str, int]:
    digest = hashlib.md5()
    size = 0
    try:
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            digest.update(chunk)
            offset += len(chunk)
        size = offset
    except OSError:
        return "", 0
    return digest.hexdigest(), size


def _run_walk(sock, scanner: _Scanner, path: str, command: str, allmatch: bool) -> None:
    walk = pathscan.Walk(path, scanner.walk_options)
    if command == "CONTSCAN":
        pathscan.contscan(walk)
    raw = command == "RAWSCAN"
    for item in walk.items():
        if isinstance(item, pathscan.Reply):
            _send(sock, ("reply", item.path, item.text))
            continue
        found, error, md5, size = scanner.scan_path(item.path, allmatch, raw)
        if error:
            _send(sock, ("reply", item.path, error))
        for name in found:
            _send(sock, ("found", item.path, name, md5, size))
        if not error and not found:
            _send(sock, ("clean", item.path))
        walk.scanned(len(found), bool(error))
    _send(sock, ("done", walk.tally.closing_ok(), walk.top))


def worker_main(sock: socket.socket, scanner: _Scanner) -> None:
    """The loop of one worker process: serve requests until the channel closes."""
    while True:
        try:
            request = _recv_request(sock)
        except (OSError, EOFError, pickle.UnpicklingError):
            return
        if request is None:
            return
        message, fds = request
        kind = message[0]
        try:
            if kind == "fd":
                _, name, allmatch = message
                fd = fds[0]
                try:
                    found, error, scanned, md5, size = scanner.scan_fd(fd, name, allmatch)
                finally:
                    os.close(fd)
                _send(sock, ("done", found, error, scanned, md5, size))
            elif kind == "file":
                _, path, allmatch = message
                found, error, md5, size = scanner.scan_path(path, allmatch)
                _send(sock, ("done", found, error, md5, size))
            elif kind == "files":
                _, paths, allmatch = message
                results = [(path, *scanner.scan_path(path, allmatch)) for path in paths]
                _send(sock, ("done", results))
            elif kind == "walk":
                _, path, command, allmatch = message
                _run_walk(sock, scanner, path, command, allmatch)
            else:
                _send(sock, ("done",))
        except OSError:
            return
        _give_back_memory()


def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def _give_back_memory() -> None:
    """Return the heap a finished scan freed to the system: a worker that
    scanned a large message shrinks back (measured: under 1 ms a job)."""
    if _TRIM is not None:
        _TRIM(0)


def _child(sock: socket.socket, keep: int, scanner: _Scanner) -> None:
    """In the forked process: drop everything of the parent but the channel."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)
    code = 0
    try:
        worker_main(sock, scanner)
    except BaseException:  # noqa: BLE001
        code = 1
    os._exit(code)


# -- the parent side ------------------------------------------------------


class _Worker:
    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock
        self.buffer = bytearray()
        self.idle_since = time.monotonic()


class WorkerPool:
    """One generation of workers around one engine.

    Workers are forked when jobs need them, up to `size`, and one that has
    waited `idle_timeout` seconds for a job exits (clamd's IdleTimeout for
    its scan threads), down to `keep`. The most recently used worker is
    given the next job, so a lightly loaded daemon keeps few processes and
    a worker that grew while scanning a large object gives its memory back
    once it is no longer needed.
    """

    def __init__(self, engine: Engine, walk_options: pathscan.WalkOptions, size: int,
                 generation: int = 1, idle_timeout: float = 30.0, keep: int = 1):
        self.scanner = _Scanner(engine, walk_options)
        self.engine = engine
        self.size = max(1, size)
        self.keep = max(1, min(keep, self.size))
        self.idle_timeout = max(0.0, float(idle_timeout))
        self.generation = generation
        self.workers: list[_Worker] = []  # alive
        self._idle: list[_Worker] = []  # a stack: the last one freed is used first
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._reaper: asyncio.Task | None = None
        self.active = 0  # jobs running
        self.closing = False
        self.started_jobs = 0

    # -- life cycle -----------------------------------------------------

    def start(self) -> None:
        """Fork the first workers (call with the engine loaded, before or inside the loop)."""
        preload_unpackers()  # imported once here, shared by every worker
        gc.collect()
        gc.freeze()  # keep the database's pages shared: no refcount writes from gc
        for _ in range(self.keep):
            worker = self._fork()
            self.workers.append(worker)
            self._idle.append(worker)

    def _fork(self) -> _Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            parent.close()
            _child(child, child.fileno(), self.scanner)
        child.close()
        parent.setblocking(False)
        return _Worker(pid, parent)

    async def close(self, timeout: float = 10.0) -> None:
        """Close the channels (workers exit when idle); kill what is still busy after `timeout`."""
        self.closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(WorkerLost("the pool is closing"))
        self._waiting.clear()
        workers = list(self.workers)
        for worker in workers:
            # Idle workers see the end of their channel and exit; a job still
            # reading from one sees it too and ends with WorkerLost.
            try:
                worker.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = asyncio.get_running_loop().time() + timeout
        for worker in workers:
            while True:
                try:
                    pid, _ = os.waitpid(worker.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    _kill(worker.pid)
                    continue
                await asyncio.sleep(0.02)
            worker.sock.close()
        self.workers.clear()
        self._idle.clear()

    def kill_now(self) -> None:
        for worker in self.workers:
            worker.sock.close()
            _kill(worker.pid)
        self.workers.clear()
        self._idle.clear()

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def pending(self) -> int:
        """Jobs running or waiting for a worker of this pool."""
        return self.active + len(self._waiting)

    def idle_times(self) -> list[float]:
        """Seconds each idle worker has waited, for STATS."""
        now = time.monotonic()
        return [now - w.idle_since for w in self._idle]

    # -- handing out workers ----------------------------------------------

    async def _acquire(self) -> _Worker:
        if self.closing:
            raise WorkerLost("the pool is closing")
        if self._idle:
            return self._idle.pop()
        if len(self.workers) < self.size:
            worker = self._fork()
            self.workers.append(worker)
            return worker
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())  # handed over just as the job was given up
            else:
                try:
                    self._waiting.remove(waiter)
                except ValueError:
                    pass
            raise

    def _release(self, worker: _Worker) -> None:
        if self.closing:
            return
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        worker.idle_since = time.monotonic()
        self._idle.append(worker)
        if len(self.workers) > self.keep and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        """Let workers idle for longer than idle_timeout go, down to `keep`."""
        while len(self.workers) > self.keep and not self.closing:
            now = time.monotonic()
            # The stack's bottom has waited longest.
            oldest = self._idle[0] if self._idle else None
            if oldest is not None and now - oldest.idle_since >= self.idle_timeout:
                self._idle.pop(0)
                self.workers.remove(oldest)
                oldest.sock.close()  # the worker sees the channel close and exits
                _wait_later(oldest.pid)
                continue
            wait = self.idle_timeout - (now - oldest.idle_since) if oldest else self.idle_timeout
            await asyncio.sleep(max(0.05, wait))

    # -- jobs -----------------------------------------------------------

    async def run(self, message: tuple, fd: int | None = None,
                  on_start: Callable[[], None] | None = None) -> AsyncIterator[tuple]:
        """Send one job to an idle worker and yield its messages up to ("done", ...).

        `on_start` is called when a worker has taken the job (STATS tells
        queued jobs from running ones).
        """
        worker = await self._acquire()
        self.active += 1
        self.started_jobs += 1
        if on_start is not None:
            on_start()
        broken = False
        try:
            await self._send(worker, message, fd)
            while True:
                reply = await self._read(worker)
                yield reply
                if reply[0] == "done":
                    break
        except (OSError, WorkerLost, EOFError, pickle.UnpicklingError) as exc:
            broken = True
            raise WorkerLost(str(exc)) from None
        except BaseException:
            # The job was abandoned (client gone, task cancelled): the worker
            # may still be busy with it, so it is replaced.
            broken = True
            raise
        finally:
            self.active -= 1
            if broken:
                self._discard(worker)
            else:
                self._release(worker)

    async def _send(self, worker: _Worker, message: tuple, fd: int | None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        packet = _HEADER.pack(len(data)) + data
        loop = asyncio.get_running_loop()
        if fd is not None:
            # The header carries the descriptor; a few bytes always fit the buffer.
            sent = socket.send_fds(worker.sock, [packet[: _HEADER.size]], [fd])
            packet = packet[sent:]
        await loop.sock_sendall(worker.sock, packet)

    async def _read(self, worker: _Worker) -> tuple:
        loop = asyncio.get_running_loop()
        while True:
            if len(worker.buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack(worker.buffer[: _HEADER.size])
                if size > MAX_MESSAGE:
                    raise WorkerLost("oversized message")
                if len(worker.buffer) >= _HEADER.size + size:
                    body = bytes(worker.buffer[_HEADER.size: _HEADER.size + size])
                    del worker.buffer[: _HEADER.size + size]
                    return pickle.loads(body)
            chunk = await loop.sock_recv(worker.sock, 1 << 16)
            if not chunk:
                raise WorkerLost(f"worker {worker.pid} exited")
            worker.buffer.extend(chunk)

    def _discard(self, worker: _Worker) -> None:
        """A worker that died or was left in the middle of a job: kill it; forks replace it on demand."""
        worker.sock.close()
        _kill(worker.pid)
        try:
            self.workers.remove(worker)
        except ValueError:
            pass
        if self._waiting and not self.closing and len(self.workers) < self.size:
            # A job waits for a worker that will not come back: fork one for it.
            new = self._fork()
            self.workers.append(new)
            self._release(new)


def _wait_later(pid: int, tries: int = 200) -> None:
    """Collect an exiting worker without blocking the loop (it exits within moments)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if done:
        return
    if tries <= 0:
        _kill(pid)
        return
    asyncio.get_running_loop().call_later(0.05, _wait_later, pid, tries - 1)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
