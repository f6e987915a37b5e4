"""Scan worker processes, one database generation at a time.

Python threads do not scan in parallel, so the daemon scans in processes.
Each `WorkerPool` is one generation, and a generation lives in a process
tree of its own: a loader process forked from the daemon loads the
database, then forks the scan workers, which share the compiled database
copy-on-write. The daemon process itself never holds a database, so
retiring a generation (its jobs done) ends its processes and gives every
page back: memory after any number of reloads is that of a fresh start,
and a reload never makes the daemon's event loop wait for a load.

The daemon talks to the loader over a control socketpair (a new worker:
the daemon sends one end of the worker's channel, the loader forks and
answers with the pid; the loader reports each worker's exit status) and to
each worker over its channel: a job (a `jobs` dataclass, with a descriptor
attached for ScanDescriptor) answered by replies that end with `Finished`.
Messages are pickled behind a 4-byte length.

A worker that dies in the middle of a job is replaced; the job ends with
`WorkerLost`, which tells how it died. Jobs still waiting for a worker of a
pool that is replaced by a reload end with `PoolClosed` and are run on the
new pool.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from clammail.clamd import pathscan
from clammail.clamd.jobs import (
    Finished,
    Job,
    Outcome,
    ScanDescriptor,
    ScanFiles,
    WalkPath,
    WorkerReply,
)
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

# How long a lost worker's exit status is waited for (the loader reaps it at once).
EXIT_STATUS_WAIT = 2.0


class WorkerLost(Exception):
    """The worker running a job died, or no worker could be had."""

    def __init__(self, reason: str, pid: int | None = None):
        super().__init__(reason)
        self.reason = reason  # for the client: "worker process killed by SIGKILL"
        self.pid = pid


class PoolClosed(WorkerLost):
    """The pool closed (a reload replaced it, or shutdown) before the job got a worker."""

    def __init__(self, reason: str = "no scan process available"):
        super().__init__(reason)


class LoadFailed(Exception):
    """The generation's database did not load; the message says why."""


def describe_exit(status: int | None) -> str:
    """A worker's end in words, from its wait status."""
    if status is None:
        return "worker process lost"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"worker process killed by {name}"
    return f"worker process exited with status {os.waitstatus_to_exitcode(status)}"


# -- messages on the loader's control channel ---------------------------------


@dataclass(frozen=True)
class _Loaded:
    info: object  # what the load function returned beside the engine (DatabaseInfo)


@dataclass(frozen=True)
class _NotLoaded:
    reason: str


@dataclass(frozen=True)
class _Spawn:
    """Fork a worker on the channel end sent with this message."""


@dataclass(frozen=True)
class _Spawned:
    pid: int


@dataclass(frozen=True)
class _Exited:
    pid: int
    status: int


# -- framing ----------------------------------------------------------------


def _packet(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _send(sock: socket.socket, message: object, fd: int | None = None) -> None:
    """Blocking send of one message; `fd` rides on its first bytes."""
    packet = _packet(message)
    if fd is not None:
        sent = socket.send_fds(sock, [packet[: _HEADER.size]], [fd])
        packet = packet[sent:]
    sock.sendall(packet)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> tuple[object, list[int]] | None:
    """Blocking receive of one message and the descriptors that came with it; None at EOF."""
    header, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 1)
    if not header:
        for fd in fds:
            os.close(fd)
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


class _Reader:
    """Messages from a non-blocking socket, for the daemon's event loop."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    async def read(self) -> object:
        loop = asyncio.get_running_loop()
        while True:
            if len(self.buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack(self.buffer[: _HEADER.size])
                if size > MAX_MESSAGE:
                    raise EOFError("oversized message")
                if len(self.buffer) >= _HEADER.size + size:
                    body = bytes(self.buffer[_HEADER.size: _HEADER.size + size])
                    del self.buffer[: _HEADER.size + size]
                    return pickle.loads(body)
            chunk = await loop.sock_recv(self.sock, 1 << 16)
            if not chunk:
                raise EOFError("channel closed")
            self.buffer.extend(chunk)


# -- the worker side ------------------------------------------------------


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

    def scan_fd(self, fd: int, name: str, allmatch: bool = False, raw: bool = False) -> Outcome:
        try:
            result = self.engine_for(raw).scan_fd(fd, name=name, allmatch=allmatch)
        except Exception:  # noqa: BLE001 - a bug in the engine must not kill the daemon
            log.error("engine failure on %s:\n%s", name, traceback.format_exc())
            return Outcome(name, error=ENGINE_FAILURE)
        md5, size = _md5_of(fd) if result.detections else ("", 0)
        return Outcome(name, tuple(result.detections), result.error, md5, size)

    def scan_path(self, path: str, allmatch: bool = False, raw: bool = False) -> Outcome:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            return Outcome(path, error=pathscan.open_error(exc))
        try:
            return self.scan_fd(fd, path, allmatch, raw)
        finally:
            os.close(fd)


def _md5_of(fd: int) -> tuple[str, int]:
    digest = hashlib.md5()
    try:
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            digest.update(chunk)
            offset += len(chunk)
    except OSError:
        return "", 0
    return digest.hexdigest(), offset


def _run_walk(sock: socket.socket, scanner: _Scanner, job: WalkPath) -> Finished:
    walk = pathscan.Walk(job.path, scanner.walk_options)
    if job.command == "CONTSCAN":
        pathscan.contscan(walk)
    for item in walk.items():
        if isinstance(item, pathscan.Reply):
            _send(sock, item)
            continue
        outcome = scanner.scan_path(item.path, job.allmatch, job.raw)
        _send(sock, outcome)
        walk.scanned(len(outcome.found), outcome.error is not None)
    return Finished(walk.tally.closing_ok(), walk.top)


def worker_main(sock: socket.socket, scanner: _Scanner) -> None:
    """The loop of one worker process: serve jobs until the channel closes."""
    while True:
        try:
            received = _recv(sock)
        except (OSError, EOFError, pickle.UnpicklingError):
            return
        if received is None:
            return
        job, fds = received
        finished = Finished()
        try:
            if isinstance(job, ScanDescriptor):
                try:
                    _send(sock, scanner.scan_fd(fds[0], job.name))
                finally:
                    for fd in fds:
                        os.close(fd)
            elif isinstance(job, ScanFiles):
                for path in job.paths:
                    _send(sock, scanner.scan_path(path, job.allmatch))
            elif isinstance(job, WalkPath):
                finished = _run_walk(sock, scanner, job)
            _send(sock, finished)
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
    """Return the heap a finished scan (or load) freed to the system: a worker
    that scanned a large message shrinks back (measured: under 1 ms a job)."""
    if _TRIM is not None:
        _TRIM(0)


def _forked(keep: int) -> None:
    """In a process just forked from the daemon: drop its signals and descriptors."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    # The daemon decides when scans stop: Ctrl-C in a terminal is its to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def _worker_process(sock: socket.socket, scanner: _Scanner) -> None:
    _forked(sock.fileno())
    code = 0
    try:
        worker_main(sock, scanner)
    except BaseException:  # noqa: BLE001
        code = 1
    os._exit(code)


# -- the loader process ----------------------------------------------------


def _loader_process(control: socket.socket, load: Callable[[], tuple[Engine, object]],
                    walk_options: pathscan.WalkOptions) -> None:
    """Load the generation's database, then fork workers on request until the daemon lets go."""
    _forked(control.fileno())
    # Out of the terminal's session: a hang-up or Ctrl-C there is the daemon's to handle.
    try:
        os.setsid()
    except OSError:
        pass
    code = 0
    try:
        try:
            engine, info = load()
        except Exception as exc:  # noqa: BLE001 - any failure is the load's answer
            _send(control, _NotLoaded(str(exc) or type(exc).__name__))
            os._exit(0)
        gc.collect()
        gc.freeze()  # keep the database's pages shared: no refcount writes from gc
        _give_back_memory()  # what the load built and dropped: nothing of it stays
        _send(control, _Loaded(info))
        _serve_spawns(control, _Scanner(engine, walk_options))
    except BaseException:  # noqa: BLE001
        code = 1
    os._exit(code)


def _serve_spawns(control: socket.socket, scanner: _Scanner) -> None:
    children: set[int] = set()
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(wake_read, selectors.EVENT_READ, "child")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "child":
                    try:
                        os.read(wake_read, 4096)
                    except BlockingIOError:
                        pass
                    _report_exits(control, children)
                    continue
                received = _recv(control)
                if received is None:
                    return  # the daemon retired this generation (or is gone)
                message, fds = received
                if isinstance(message, _Spawn) and fds:
                    channel = socket.socket(fileno=fds[0])
                    pid = os.fork()
                    if pid == 0:
                        _worker_process(channel, scanner)
                    channel.close()
                    children.add(pid)
                    _send(control, _Spawned(pid))
                else:
                    for fd in fds:
                        os.close(fd)
            _report_exits(control, children)
    finally:
        selector.close()
        control.close()
        _end_children(children)


def _report_exits(control: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        try:
            _send(control, _Exited(pid, status))
        except OSError:
            pass


def _end_children(children: set[int], grace: float = 10.0) -> None:
    """The daemon let go: the workers see their channels close; wait, then kill stragglers."""
    deadline = time.monotonic() + grace
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            children.discard(pid)
            continue
        if time.monotonic() > deadline:
            for child in children:
                _signal(child, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.02)


# -- the daemon side ------------------------------------------------------


class _Worker:
    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock
        self.reader = _Reader(sock)
        self.idle_since = time.monotonic()


class WorkerPool:
    """One generation: its loader process and its workers.

    `load` runs in the loader process and returns (engine, info); `start`
    gives back the info (DatabaseInfo for the daemon) or raises LoadFailed.
    Workers are forked when jobs need them, up to `size`, and one that has
    waited `idle_timeout` seconds for a job exits (clamd's IdleTimeout for
    its scan threads), down to `keep`. The most recently used worker is
    given the next job, so a lightly loaded daemon keeps few processes and
    a worker that grew while scanning a large object gives its memory back
    once it is no longer needed.
    """

    def __init__(self, load: Callable[[], tuple[Engine, object]], walk_options: pathscan.WalkOptions,
                 size: int, generation: int = 1, idle_timeout: float = 30.0, keep: int = 1):
        self._load = load  # runs in the loader process
        self.walk_options = walk_options
        self.size = max(1, size)
        self.keep = max(1, min(keep, self.size))
        self.idle_timeout = max(0.0, float(idle_timeout))
        self.generation = generation
        self.loader_pid: int | None = None
        self.workers: list[_Worker] = []  # alive
        self._control: socket.socket | None = None
        self._control_reader: _Reader | None = None
        self._listener: asyncio.Task | None = None
        self._spawning: collections.deque[asyncio.Future] = collections.deque()
        self._starting = 0  # workers asked of the loader, not there yet
        self._exits: dict[int, int] = {}  # pid -> wait status, as the loader reports them
        self._exit_waiters: dict[int, asyncio.Future] = {}
        self._idle: list[_Worker] = []  # a stack: the last one freed is used first
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._reaper: asyncio.Task | None = None
        self.active = 0  # jobs running
        self.closing = False
        self.broken = False  # the loader is gone: no new workers
        self.started_jobs = 0
        self.on_broken: Callable[[WorkerPool], None] | None = None

    # -- life cycle -----------------------------------------------------

    async def start(self) -> object:
        """Load the database in a new loader process and fork the first workers: the load's info."""
        info = await self.load()
        await self.open()
        return info

    def load_blocking(self) -> object:
        """`load` for start-up, before the event loop runs (call `open` in it later)."""
        self._fork_loader()
        self._control.setblocking(True)
        try:
            first = _recv(self._control)
        except (OSError, EOFError, pickle.UnpicklingError):
            first = None
        self._control.setblocking(False)
        return self._loaded(first[0] if first else None)

    async def load(self) -> object:
        """Fork the loader and wait (without blocking the loop) for its database: the load's info."""
        self._fork_loader()
        try:
            first = await self._control_reader.read()
        except (OSError, EOFError, pickle.UnpicklingError):
            first = None
        return self._loaded(first)

    async def open(self) -> None:
        """Listen to the loader and fork the first workers (in the serving event loop)."""
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        for _ in range(self.keep):
            worker = await self._spawn()
            self.workers.append(worker)
            self._idle.append(worker)

    def _fork_loader(self) -> None:
        preload_unpackers()  # imported once here, shared by the loader and every worker
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            parent.close()
            _loader_process(child, self._load, self.walk_options)
        child.close()
        self.loader_pid = pid
        parent.setblocking(False)
        self._control = parent
        self._control_reader = _Reader(parent)

    def _loaded(self, first: object) -> object:
        """The loader's first message: the info of a loaded database, else LoadFailed."""
        if isinstance(first, _Loaded):
            return first.info
        status = None if isinstance(first, _NotLoaded) else self._loader_status()
        self._end_loader()
        if isinstance(first, _NotLoaded):
            raise LoadFailed(first.reason)
        raise LoadFailed(f"the loader process ended ({describe_exit(status).replace('worker ', '')})")

    def _loader_status(self) -> int | None:
        try:
            pid, status = os.waitpid(self.loader_pid, 0)
        except ChildProcessError:
            return None
        return status if pid else None

    def _end_loader(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.loader_pid is not None:
            _wait_later(self.loader_pid)

    async def _listen(self) -> None:
        """The loader's messages: new workers' pids and exit statuses."""
        try:
            while True:
                message = await self._control_reader.read()
                if isinstance(message, _Spawned):
                    # Answers come in the order of the requests.
                    waiter = self._spawning.popleft() if self._spawning else None
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message.pid)
                    # else the job gave up waiting and closed the channel: the worker exits
                elif isinstance(message, _Exited):
                    waiter = self._exit_waiters.pop(message.pid, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message.status)
                    elif len(self._exits) < 4 * self.size + 64:
                        self._exits[message.pid] = message.status
        except (OSError, EOFError, pickle.UnpicklingError):
            pass
        if not self.closing:
            self.broken = True
            for waiter in self._spawning:
                if not waiter.done():
                    waiter.set_exception(WorkerLost("the loader process ended"))
            self._spawning.clear()
            if not self.workers:
                self._fail_waiting()
            if self.on_broken is not None:
                self.on_broken(self)

    async def _spawn(self) -> _Worker:
        if self.broken or self._control is None:
            raise WorkerLost("the loader process ended")
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        waiter = asyncio.get_running_loop().create_future()
        self._spawning.append(waiter)
        try:
            _send_nowait(self._control, _Spawn(), child.fileno())
        except OSError as exc:
            parent.close()
            self._spawning.remove(waiter)
            raise WorkerLost(f"cannot reach the loader process: {exc.strerror}") from None
        finally:
            child.close()
        try:
            pid = await waiter
        except BaseException:
            parent.close()
            raise
        parent.setblocking(False)
        return _Worker(pid, parent)

    def hand_over(self) -> None:
        """A newer pool serves from now on: jobs still waiting here go there (PoolClosed)."""
        self._fail_waiting(PoolClosed("the pool was replaced"))

    def _fail_waiting(self, error: WorkerLost | None = None) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(error or PoolClosed())

    async def close(self, timeout: float = 10.0) -> None:
        """Close the channels (workers exit when idle), then let the loader go;
        kill what is still there after `timeout`."""
        self.closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        self._fail_waiting()
        for waiter in self._spawning:
            if not waiter.done():
                waiter.set_exception(PoolClosed())
        workers = list(self.workers)
        for worker in workers:
            # Idle workers see the end of their channel and exit; a job still
            # reading from one sees it too and ends with WorkerLost.
            try:
                worker.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._control is not None:
            try:
                self._control.shutdown(socket.SHUT_WR)  # the loader waits for its workers, then exits
            except OSError:
                pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.loader_pid is not None and _running(self.loader_pid):
            if loop.time() > deadline:
                for worker in workers:
                    _signal(worker.pid, signal.SIGKILL)
                _signal(self.loader_pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.02)
        if self._listener is not None:
            self._listener.cancel()
        for worker in workers:
            worker.sock.close()
        self._end_loader()
        self.workers.clear()
        self._idle.clear()

    def kill_now(self) -> None:
        self.closing = True
        for worker in self.workers:
            worker.sock.close()
            _signal(worker.pid, signal.SIGKILL)
        if self.loader_pid is not None:
            _signal(self.loader_pid, signal.SIGKILL)
        self._end_loader()
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
            raise PoolClosed()
        if self._idle:
            return self._idle.pop()
        if len(self.workers) + self._starting < self.size and not self.broken:
            self._starting += 1
            try:
                worker = await self._spawn()
            finally:
                self._starting -= 1
            if self.closing:
                worker.sock.close()
                raise PoolClosed()
            self.workers.append(worker)
            return worker
        if self.broken and not self.workers:
            raise PoolClosed("the loader process ended")
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
                continue
            wait = self.idle_timeout - (now - oldest.idle_since) if oldest else self.idle_timeout
            await asyncio.sleep(max(0.05, wait))

    # -- jobs -----------------------------------------------------------

    async def run(self, job: Job, fd: int | None = None,
                  on_start: Callable[[], None] | None = None) -> AsyncIterator[WorkerReply]:
        """Send one job to an idle worker and yield its replies up to Finished.

        `on_start` is called when a worker has taken the job (STATS tells
        queued jobs from running ones). A worker that dies meanwhile ends
        the job with WorkerLost, saying how it died.
        """
        worker = await self._acquire()
        self.active += 1
        self.started_jobs += 1
        if on_start is not None:
            on_start()
        lost: WorkerLost | None = None
        try:
            try:
                await self._send(worker, job, fd)
                while True:
                    reply = await worker.reader.read()
                    yield reply
                    if isinstance(reply, Finished):
                        break
            except (OSError, EOFError, pickle.UnpicklingError):
                lost = WorkerLost(describe_exit(await self._exit_status(worker.pid)), worker.pid)
        except BaseException:
            # The job was abandoned (client gone, task cancelled): the worker
            # may still be busy with it, so it is replaced.
            lost = lost or WorkerLost("abandoned")
            raise
        finally:
            self.active -= 1
            if lost is not None or self.closing:
                # A worker known dead is not killed again: its pid may be another's by now.
                self._discard(worker, kill=lost is None or lost.pid is None)
            else:
                self._release(worker)
        if lost is not None:
            raise lost

    async def _send(self, worker: _Worker, job: Job, fd: int | None) -> None:
        packet = _packet(job)
        if fd is not None:
            # The header carries the descriptor; a few bytes always fit the buffer.
            sent = socket.send_fds(worker.sock, [packet[: _HEADER.size]], [fd])
            packet = packet[sent:]
        await asyncio.get_running_loop().sock_sendall(worker.sock, packet)

    async def _exit_status(self, pid: int) -> int | None:
        """The wait status of a worker that died (the loader reports it), if it comes in time."""
        if pid in self._exits:
            return self._exits.pop(pid)
        if self.broken or self._control is None:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._exit_waiters[pid] = waiter
        try:
            return await asyncio.wait_for(waiter, EXIT_STATUS_WAIT)
        except TimeoutError:
            return None
        finally:
            self._exit_waiters.pop(pid, None)

    def _discard(self, worker: _Worker, kill: bool = True) -> None:
        """A worker that died or was left in the middle of a job: kill it; others replace it on demand."""
        worker.sock.close()
        if kill:
            _signal(worker.pid, signal.SIGKILL)
        self._exits.pop(worker.pid, None)
        try:
            self.workers.remove(worker)
        except ValueError:
            pass
        if self._waiting and not self.closing and not self.broken and len(self.workers) < self.size:
            # A job waits for a worker that will not come back: fork one for it.
            asyncio.get_running_loop().create_task(self._replace())
        elif self.broken and not self.workers:
            self._fail_waiting()

    async def _replace(self) -> None:
        self._starting += 1
        try:
            worker = await self._spawn()
        except WorkerLost:
            if not self.workers:
                self._fail_waiting()
            return
        finally:
            self._starting -= 1
        if self.closing:
            worker.sock.close()
            return
        self.workers.append(worker)
        self._release(worker)


def _send_nowait(sock: socket.socket, message: object, fd: int) -> None:
    """A small control message on a non-blocking socket: it always fits the buffer."""
    packet = _packet(message)
    sent = socket.send_fds(sock, [packet], [fd])
    if sent < len(packet):
        sock.setblocking(True)
        try:
            sock.sendall(packet[sent:])
        finally:
            sock.setblocking(False)


def _running(pid: int) -> bool:
    """Whether our child `pid` still runs (collecting it if it ended)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        # Not our child (the daemon detached after forking it): ask the kernel.
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return done == 0


def _wait_later(pid: int, tries: int = 400) -> None:
    """Collect an exiting child without blocking the loop (it exits within moments)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if done:
        return
    if tries <= 0:
        _signal(pid, signal.SIGKILL)
        tries = 40
    try:
        asyncio.get_running_loop().call_later(0.05, _wait_later, pid, tries - 1)
    except RuntimeError:  # no loop (start-up failed before serving): wait here
        os.waitpid(pid, 0)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
