"""The daemon's sockets: asyncio for connections, worker processes for scans.

Every connection is one task that reads, feeds `protocol.Connection` and
acts on its events; scans go to the current `WorkerPool`, so a slow client
or a long scan never holds up anyone else. Replies of one connection are
written one at a time (a session's replies come in the order scans end).

A connection never makes the daemon hold more than a bounded amount for it:
it reads on only while its replies are taken (a client that does not read
is dropped after SendBufTimeout), a session has at most MaxQueue scans in
flight, streamed data goes to a file in TemporaryDirectory as clamd does,
and clamd's deadlines (CommandReadTimeout, ReadTimeout) are not extended by
a client that trickles its command in byte by byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import resource
import socket
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from clammail.clamd import pathscan, protocol
from clammail.clamd.jobs import (
    Finished,
    Job,
    Outcome,
    ScanDescriptor,
    ScanFiles,
    WalkPath,
    WorkerReply,
    verdict_lines,
)
from clammail.clamd.protocol import Request, reply_line
from clammail.clamd.workers import ENGINE_FAILURE, PoolClosed, WorkerLost

# Connections served at once; beyond this, accepting waits (file descriptors
# are the limit: each connection may hold a descriptor or a stream too).
MAX_CONNECTIONS = 4000
# Descriptors kept for everything else: listeners, workers, logs, reloads.
RESERVED_FDS = 64
READ_SIZE = 1 << 16


def connection_limit() -> int:
    """How many connections fit the descriptor limit (two descriptors each at most)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, (soft - RESERVED_FDS) // 2))


class _Stopped(Exception):
    """The daemon is shutting down and this connection has nothing in flight."""


@dataclass
class Task:
    """A scan job, for STATS: queued until a worker takes it, then running."""

    command: str
    name: str
    queued: float = field(default_factory=time.monotonic)
    started: float | None = None

    def begin(self) -> None:
        self.started = time.monotonic()


class Server:
    """Listens, serves connections, and routes scans to the current pool."""

    def __init__(self, daemon):
        self.daemon = daemon  # clammail.clamd.daemon.Daemon: config, pool, log, actions
        self.config = daemon.config
        self.listeners: list[tuple[socket.socket, str]] = []
        # Sockets from systemd stay open at shutdown: systemd keeps them for
        # the next start (clamd leaves them alone too).
        self.close_listeners = True
        self.stopping = False
        self.sessions: set[_Session] = set()
        self.tasks: set[asyncio.Task] = set()
        self.running: dict[int, Task] = {}
        self.connections = 0
        self._accepting: list[asyncio.Task] = []
        self._slots = asyncio.Semaphore(connection_limit())
        self._queue = asyncio.Semaphore(max(1, int(self.config["MaxQueue"])))

    # -- listening ------------------------------------------------------

    def add_listener(self, sock: socket.socket, kind: str) -> None:
        sock.setblocking(False)
        self.listeners.append((sock, kind))

    def start(self) -> None:
        for sock, kind in self.listeners:
            self._accepting.append(asyncio.create_task(self._accept_loop(sock, kind)))

    async def stop_accepting(self) -> None:
        """Shutdown begins: new connections are refused at once, as clamd refuses
        them, and connections that wait for a command are closed."""
        self.stopping = True
        for task in self._accepting:
            task.cancel()
        for task in self._accepting:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._accepting.clear()
        if self.close_listeners:
            for sock, _ in self.listeners:
                sock.close()
        for session in list(self.sessions):
            session.stop_if_idle()

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight scans to be answered (bounded), then cancel what is left."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)

    async def _accept_loop(self, listener: socket.socket, kind: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                self._slots.release()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.daemon.log.error(f"accept() failed: {os.strerror(exc.errno)}")
                    await asyncio.sleep(0.1)
                    continue
                raise
            sock.setblocking(False)
            task = asyncio.create_task(self._serve(sock, kind))
            self.tasks.add(task)
            task.add_done_callback(self._connection_done)

    def _connection_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.daemon.log.error(f"connection handler failed: {exc!r}")

    # -- one connection -------------------------------------------------

    async def _serve(self, sock: socket.socket, kind: str) -> None:
        session = _Session(self, sock, kind)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            await session.finish()


class _Session:
    """One client connection."""

    def __init__(self, server: Server, sock: socket.socket, kind: str):
        self.server = server
        self.daemon = server.daemon
        self.config = server.config
        self.sock = sock
        self.kind = kind
        self.conn = protocol.Connection(int(self.config["StreamMaxLength"]), allow_fd=kind == "unix")
        self.jobs: set[asyncio.Task] = set()
        # A session's scans in flight: clamd's receive thread, too, waits
        # for room in its queue (MaxQueue) before it reads on.
        self.max_jobs = max(1, int(self.config["MaxQueue"]))
        self.write_lock = asyncio.Lock()
        self.stream_fd: int | None = None
        self.stream_id, self.stream_term = 0, protocol.NL
        self.broken = False
        self.muted = False  # a session ended in an error: replies still due are dropped
        self._reading: asyncio.Future | None = None  # set while waiting for the client

    async def run(self) -> None:
        # clamd's deadlines: CommandReadTimeout from the connection's start,
        # then ReadTimeout from each command and, while a stream comes in,
        # from each read. Bytes that do not complete a command do not move
        # them, so a client that sends its command a byte at a time is timed
        # out like one that sends nothing.
        loop = asyncio.get_running_loop()
        deadline = _deadline(loop, self.config["CommandReadTimeout"])
        while self.conn.mode is not protocol.Mode.DONE and not self.broken:
            try:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                data, fds = await asyncio.wait_for(self._recv(), remaining)
            except _Stopped:
                await self._events(self.conn.eof())
                break
            except TimeoutError:
                await self._events(self.conn.timeout())
                break
            except OSError:
                await self._events(self.conn.eof())
                break
            if not data and not fds:
                await self._events(self.conn.eof())
                break
            events = self.conn.receive(data, fds)
            await self._events(events)
            if self.conn.mode is protocol.Mode.STREAM or any(
                    isinstance(e, (Request, protocol.StreamStart)) for e in events):
                deadline = _deadline(loop, self.config["ReadTimeout"])

    async def finish(self) -> None:
        if self.jobs:
            await asyncio.gather(*self.jobs, return_exceptions=True)
        self._drop_stream()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _idle(self) -> bool:
        """No scan in flight and no stream coming in: shutdown closes such a connection."""
        return not self.jobs and self.conn.mode is not protocol.Mode.STREAM

    def stop_if_idle(self) -> None:
        """At shutdown: stop waiting for this client's next command if nothing is in flight."""
        if self._reading is not None and not self._reading.done() and self._idle():
            self._reading.set_exception(_Stopped())

    async def _recv(self) -> tuple[bytes, list[int]]:
        loop = asyncio.get_running_loop()
        fileno = self.sock.fileno()
        while True:
            if self.server.stopping and self._idle():
                raise _Stopped()
            try:
                if self.kind == "unix":
                    data, fds, _, _ = socket.recv_fds(self.sock, READ_SIZE, 8)
                    return data, list(fds)
                return self.sock.recv(READ_SIZE), []
            except (BlockingIOError, InterruptedError):
                pass
            ready = loop.create_future()

            def wake(fut=ready):
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(fileno, wake)
            self._reading = ready
            try:
                await ready
            finally:
                self._reading = None
                loop.remove_reader(fileno)

    async def send(self, data: bytes) -> bool:
        """Write one reply; False (and the connection is given up) if the client does not read."""
        if self.broken:
            return False
        loop = asyncio.get_running_loop()
        limit = max(float(self.config["SendBufTimeout"]) / 1000.0, 0.001)
        async with self.write_lock:
            if self.broken:  # given up while this reply waited its turn
                return False
            if self.muted:
                return True
            try:
                await asyncio.wait_for(loop.sock_sendall(self.sock, data), max(limit, 1.0))
                return True
            except (TimeoutError, OSError):
                self.broken = True
                return False

    # -- events ---------------------------------------------------------

    async def _events(self, events: list) -> None:
        for index, event in enumerate(events):
            if self.broken:
                _close_unclaimed(events[index:])
                return
            if isinstance(event, protocol.Send):
                await self.send(event.data)
            elif isinstance(event, protocol.StreamStart):
                self._start_stream(event)
            elif isinstance(event, protocol.StreamData):
                await self._stream_data(event.data)
            elif isinstance(event, protocol.StreamAbort):
                self._drop_stream()
            elif isinstance(event, Request):
                await self._request(event)
            elif isinstance(event, protocol.SessionGarbage) and self.jobs:
                await self.send(reply_line(event.id, event.term, "Error processing command. ERROR"))
                self.muted = True
            elif isinstance(event, protocol.Close) and event.abort:
                self.muted = True

    def _start_stream(self, event: protocol.StreamStart) -> None:
        self._drop_stream()
        self.stream_id, self.stream_term = event.id, event.term
        try:
            self.stream_fd = _spool_fd(self.config["TemporaryDirectory"])
        except OSError as exc:
            # clamd closes the connection without a word when it cannot
            # create the temporary file.
            self.daemon.log.error(f"INSTREAM: Can't create temporary file: {exc.strerror or exc}")
            self.broken = True

    async def _stream_data(self, data) -> None:
        if self.stream_fd is None:
            return
        try:
            _write_all(self.stream_fd, data)
        except OSError as exc:
            self.daemon.log.error(f"INSTREAM: Can't write to temporary file: {exc.strerror or exc}")
            self._drop_stream()
            await self.send(reply_line(self.stream_id, self.stream_term, "Error writing to temporary file ERROR"))
            self.broken = True

    def _drop_stream(self) -> None:
        if self.stream_fd is not None:
            os.close(self.stream_fd)
            self.stream_fd = None

    async def _request(self, request: Request) -> None:
        # Answers that need no scan are written before the next command is
        # read, so a client that does not read its replies stops being read.
        immediate = {
            "PING": self._ping, "VERSION": self._version, "VERSIONCOMMANDS": self._commands,
            "RELOAD": self._reload,
        }
        command = request.command
        if command in immediate:
            await immediate[command](request)
            return
        if command == "SHUTDOWN":
            self.daemon.request_shutdown("SHUTDOWN command")
            return
        if command in ("DETSTATS", "DETSTATSCLEAR"):
            return  # clamd 1.4.6 removed detection statistics: it closes without a reply
        await self._room_for_job()
        if command == "STATS":
            self._spawn(self._stats(request))  # clamd's thread pool answers it, as a scan
        elif command == "INSTREAM":
            fd, self.stream_fd = self.stream_fd, None
            self._spawn(self._scan_fd(request, fd, "stream", "INSTREAM"))
        elif command == "FILDES":
            self._spawn(self._scan_fd(request, request.fd, f"fd[{request.fd}]", "FILDES"))
        elif command == "STREAM":
            self._spawn(self._stream_port(request))
        else:
            self._spawn(self._path_command(request))

    async def _room_for_job(self) -> None:
        while len(self.jobs) >= self.max_jobs:
            await asyncio.wait(set(self.jobs), return_when=asyncio.FIRST_COMPLETED)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task) -> None:
        self.jobs.discard(task)
        if self.server.stopping:
            self.stop_if_idle()  # a session's last scan answered: no next command

    async def reply(self, request: Request, text: str | bytes) -> bool:
        return await self.send(reply_line(request.id, request.term, text))

    # -- simple commands --------------------------------------------------

    async def _ping(self, request: Request) -> None:
        await self.reply(request, "PONG")

    async def _version(self, request: Request) -> None:
        await self.reply(request, self.daemon.version_string())

    async def _commands(self, request: Request) -> None:
        await self.reply(request, f"{self.daemon.version_string()}| COMMANDS: {protocol.ADVERTISED}")

    async def _stats(self, request: Request) -> None:
        await self.reply(request, self.daemon.stats_text(self.server))

    async def _reload(self, request: Request) -> None:
        await self.reply(request, "RELOADING")
        self.daemon.request_reload("RELOAD command")

    # -- scans ----------------------------------------------------------

    async def _report(self, request: Request, outcome: Outcome, reply_name: str, log_name: str,
                      reply_ok: bool, extended_reply: bool = False) -> bool:
        """Log an outcome as clamd does, run VirusEvent, and reply; False once the client is gone.

        `reply_ok`: a clean object gets its own "OK" (single-object
        commands); a walk answers OK once at its end instead.
        """
        extended = bool(self.config["ExtendedDetectionInfo"])
        if outcome.found:
            for line, virus in zip(verdict_lines(log_name, outcome, extended), outcome.found, strict=True):
                self.daemon.log.info(line)
                await self.daemon.virus_event(log_name, virus)
        elif outcome.error is not None or self.config["LogClean"]:
            self.daemon.log.info(verdict_lines(log_name, outcome)[0])
        if outcome.clean and not reply_ok:
            return True
        for line in verdict_lines(reply_name, outcome, extended_reply and extended):
            if not await self.reply(request, line):
                return False
        return True

    def _log_name(self, command: str, fd: int) -> str:
        """What clamd's log calls a scanned descriptor (its reply says "stream" or "fd[N]")."""
        if command == "INSTREAM":
            return "instream(local)" if self.kind == "unix" else f"instream({self._peer()})"
        if command == "STREAM":
            return f"stream({self._peer()})"
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")  # cli_get_filepath_from_filedesc
        except OSError:
            path = ""
        return path if path.startswith("/") else f"fd[{fd}]"

    def _peer(self) -> str:
        try:
            host, port = self.sock.getpeername()[:2]
        except (OSError, ValueError):
            return "local"
        return f"{host}@{port}"

    async def _scan_fd(self, request: Request, fd: int | None, name: str, command: str) -> None:
        if fd is None:
            return
        log_name = self._log_name(command, fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self.daemon.log.info(f"{log_name}: Not a regular file. ERROR")
                await self.reply(request, f"{name}: Not a regular file ERROR")
                return
            outcome = await self._scan_one(command, name, fd)
        finally:
            os.close(fd)
        await self._report(request, outcome, name, log_name, reply_ok=True)

    async def _scan_one(self, command: str, name: str, fd: int) -> Outcome:
        """Scan a descriptor in a worker: its outcome, or the error a lost worker leaves."""
        outcome = None
        try:
            async with contextlib.aclosing(self._scan(command, name, ScanDescriptor(name), fd)) as replies:
                async for reply in replies:
                    if isinstance(reply, Outcome):
                        outcome = reply
        except WorkerLost as lost:
            return _lost(name, lost)
        return outcome or Outcome(name, error=ENGINE_FAILURE)

    async def _path_command(self, request: Request) -> None:
        path = os.fsdecode(request.argument or b"")
        command = request.command
        if command == "ALLMATCHSCAN" and not self.config["AllowAllMatchScan"]:
            await self.reply(request, f"{path}: ALLMATCHSCAN command disabled by clamd configuration. ERROR")
            return
        if command == "MULTISCAN":
            try:
                is_dir = stat.S_ISDIR(os.stat(path).st_mode)
            except OSError:
                is_dir = True  # clamd walks it as MULTISCAN and reports the error
            if is_dir:
                await self._multiscan(request, path)
                return
            command = "CONTSCAN"
        try:
            job = self._scan(command, path, WalkPath(path, command))
            async with contextlib.aclosing(job) as replies:
                async for reply in replies:
                    if not await self._walk_reply(request, reply):
                        return  # the client is gone
        except WorkerLost as lost:
            await self._report(request, _lost(path, lost), path, path, reply_ok=True)

    async def _walk_reply(self, request: Request, reply: WorkerReply) -> bool:
        if isinstance(reply, pathscan.Reply):
            if reply.text.endswith(" ERROR"):
                self.daemon.log.info(f"{reply.path}: {reply.text}")
            return await self.reply(request, f"{reply.path}: {reply.text}")
        if isinstance(reply, Outcome):
            return await self._report(request, reply, reply.name, reply.name, reply_ok=False)
        if isinstance(reply, Finished) and reply.closing_ok:
            return await self.reply(request, f"{reply.top}: OK")
        return True

    async def _multiscan(self, request: Request, path: str) -> None:
        walk = pathscan.Walk(path, self.daemon.walk_options, multiscan=True)
        items = await asyncio.to_thread(list, walk.items())
        files = [item.path for item in items if isinstance(item, pathscan.File)]
        # clamd counts a MULTISCAN's outcome over the files it dispatched only.
        tally = pathscan.Tally(total=len(files))

        async def report(outcome: Outcome) -> None:
            if outcome.error is not None:
                tally.errors += 1
            tally.infected += len(outcome.found[:1])
            await self._report(request, Outcome(outcome.name, outcome.found[:1], outcome.error,
                                                outcome.md5, outcome.size),
                               outcome.name, outcome.name, reply_ok=False)

        async def scan_batch(paths: list[str]) -> None:
            try:
                outcomes = await self._scan_files(paths)
            except WorkerLost as lost:
                if len(paths) == 1:
                    outcomes = [_lost(paths[0], lost)]
                else:
                    # One of them may have taken the worker down: each on its own.
                    await asyncio.gather(*(scan_batch([p]) for p in paths))
                    return
            for outcome in outcomes:
                await report(outcome)

        for item in items:
            if isinstance(item, pathscan.Reply):
                await self.reply(request, f"{item.path}: {item.text}")
        size = _batch_size(len(files), self.daemon.pool.size)
        jobs = [asyncio.create_task(scan_batch(files[i:i + size])) for i in range(0, len(files), size)]
        if jobs:
            await asyncio.gather(*jobs)
        if tally.closing_ok() and not self.broken:
            await self.reply(request, f"{walk.top}: OK")

    async def _scan_files(self, paths: list[str]) -> list[Outcome]:
        """Scan files by path in one job: an Outcome for each."""
        outcomes: list[Outcome] = []
        # A batch whose worker died is split up by the caller instead of retried whole.
        job = self._scan("MULTISCANFILE", paths[0], ScanFiles(tuple(paths)), retry=len(paths) == 1)
        async with contextlib.aclosing(job) as replies:
            async for reply in replies:
                if isinstance(reply, Outcome):
                    outcomes.append(reply)
        return outcomes

    async def _scan(self, command: str, name: str, job: Job, fd: int | None = None,
                    retry: bool = True) -> AsyncIterator[WorkerReply]:
        """One job within MaxQueue's bound, listed in STATS: its replies.

        A job runs on the pool that is current when it starts; if a reload
        replaces that pool while the job waits for a worker, it runs on the
        new one. If its worker dies before anything was replied, the job is
        run once more on a fresh worker (its input is still here: a spooled
        stream, a descriptor, a path); a second loss, or one after replies,
        ends it with WorkerLost.
        """
        server = self.server
        task = Task(command, name)
        retried = False
        async with server._queue:
            server.running[id(task)] = task
            try:
                while True:
                    pool = self.daemon.pool
                    replied = False
                    try:
                        async with contextlib.aclosing(pool.run(job, fd, on_start=task.begin)) as replies:
                            async for reply in replies:
                                replied = True
                                yield reply
                        return
                    except PoolClosed:
                        if self.daemon.pool is pool or replied:
                            raise
                    except WorkerLost as lost:
                        again = retry and not retried and not replied
                        pid = f" (pid {lost.pid})" if lost.pid else ""
                        self.daemon.log.error(
                            f"{name}: {lost.reason}{pid} during the scan; "
                            + ("scanning again on a fresh worker" if again else "giving up"))
                        if not again:
                            raise
                        retried = True
            finally:
                del server.running[id(task)]

    # -- STREAM: the old port handshake -----------------------------------

    async def _stream_port(self, request: Request) -> None:
        loop = asyncio.get_running_loop()
        low, high = int(self.config["StreamMinPort"]), int(self.config["StreamMaxPort"])
        host = self._stream_host()
        listener = None
        ports = list(range(low, high + 1)) if high >= low else []
        random.shuffle(ports)
        for port in ports[:1000]:
            candidate = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                candidate.bind((host, port))
            except OSError:
                candidate.close()
                continue
            listener = candidate
            break
        if listener is None:
            self.daemon.log.error("ScanStream: Can't find any free port.")
            await self.reply(request, "Can't find any free port. ERROR")
            return
        port = listener.getsockname()[1]
        fd = None
        try:
            listener.listen(1)
            listener.setblocking(False)
            await self.reply(request, f"PORT {port}")
            try:
                data_sock, peer = await asyncio.wait_for(
                    loop.sock_accept(listener), float(self.config["CommandReadTimeout"]) or None)
            except TimeoutError:
                self.daemon.log.error(f"ScanStream {port}: accept timeout.")
                await self.reply(request, "Accept timeout. ERROR")
                return
            fd = _spool_fd(self.config["TemporaryDirectory"])
            quota = int(self.config["StreamMaxLength"])
            with data_sock:
                data_sock.setblocking(False)
                while True:
                    want = min(READ_SIZE, quota) if quota else READ_SIZE
                    if quota and want == 0:
                        self.daemon.log.warning(
                            f"ScanStream({peer[0]}@{port}): Size limit reached (max: {self.config['StreamMaxLength']})")
                        break
                    try:
                        chunk = await asyncio.wait_for(
                            loop.sock_recv(data_sock, want), float(self.config["ReadTimeout"]) or None)
                    except TimeoutError:
                        self.daemon.log.error(f"ScanStream({peer[0]}@{port}): read timeout.")
                        await self.reply(request, "read timeout ERROR")
                        return
                    if not chunk:
                        break
                    _write_all(fd, chunk)
                    quota -= len(chunk)
            scan_fd, fd = fd, None
            try:
                outcome = await self._scan_one("STREAM", "stream", scan_fd)
            finally:
                os.close(scan_fd)
            # STREAM's reply, alone of all, carries ExtendedDetectionInfo.
            await self._report(request, outcome, "stream", f"stream({peer[0]}@{port})",
                               reply_ok=True, extended_reply=True)
        finally:
            listener.close()
            if fd is not None:
                os.close(fd)

    def _stream_host(self) -> str:
        # The data port listens where the client reached us: on the same
        # address for TCP, on the loopback for the local socket.
        if self.kind == "tcp":
            try:
                return self.sock.getsockname()[0]
            except OSError:
                pass
        return "127.0.0.1"


# MULTISCAN hands files to the workers in batches: one job per file costs
# the daemon's loop more than scanning a small file costs a worker (measured:
# 10 000 files of 1 KB took 4.8 s one by one, against 2 s of scanning).
MULTISCAN_BATCH = 32


def _batch_size(files: int, workers: int) -> int:
    """Batches of up to MULTISCAN_BATCH, but enough of them to keep every worker busy."""
    return max(1, min(MULTISCAN_BATCH, files // (4 * max(1, workers))))


def _deadline(loop: asyncio.AbstractEventLoop, seconds) -> float | None:
    seconds = float(seconds or 0)
    return loop.time() + seconds if seconds > 0 else None


def _spool_fd(tmpdir: str | None) -> int:
    """An unnamed file in TemporaryDirectory (else $TMPDIR or /tmp) for streamed data.

    On disk as clamd spools it, not in memory: a stream may be as long as
    StreamMaxLength (up to 4 GB) and many may come in at once. Measured here,
    writing and reading back 1-20 MB is faster through the page cache of a
    file than through a memfd, and even 50 KB costs about the same.
    """
    directory = tmpdir or tempfile.gettempdir()
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    # A file system without O_TMPFILE: a named file, unlinked at once.
    fd, path = tempfile.mkstemp(prefix="clammail-stream.", dir=directory)
    os.unlink(path)
    return fd


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _close_unclaimed(events: list) -> None:
    """Descriptors that came with requests the connection will not carry out."""
    for event in events:
        if isinstance(event, Request) and event.fd is not None:
            os.close(event.fd)



def _lost(name: str, lost: WorkerLost) -> Outcome:
    """The outcome of a scan whose worker died (or none could be had): an error that says so."""
    return Outcome(name, error=f"Scan aborted: {lost.reason}")
