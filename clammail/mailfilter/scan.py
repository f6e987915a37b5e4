"""One message scanned by the first backend that gives a verdict.

The milter hands over the message piece by piece (a header, a body chunk);
each piece goes to a backend at once with INSTREAM, so the verdict is ready
soon after the last byte, and to a spool file, so that if that backend fails
(refused, killed, slow, garbage) the message can be sent again to the next
one. The spool keeps the first MiB in memory and the rest in
TemporaryDirectory: memory per message is bounded whatever its size.

Only the first `limit` bytes are scanned (clamav-milter's MaxFileSize: it
sends no more and scans what it sent); the rest is counted, not kept.

The proxy has a whole message in memory when it scans (an SMTP DATA
phase is received before it is answered): `scan_bytes` sends it to each
backend in turn, asynchronously, with the same failover rules.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

from clammail.clamd.client import Address, ClamdError, InstreamWriter, Status, Verdict
from clammail.mailfilter.backends import Backend, BackendPool

SPOOL_MEMORY = 1 << 20  # bytes of a message kept in memory before the spool goes to disk
REPLAY_PIECE = 64 * 1024


@dataclass(frozen=True)
class ScanResult:
    """What became of one message's scan."""

    verdict: Verdict | None  # None: no backend gave one
    backend: Address | None  # the backend whose verdict this is
    failure: str = ""  # why there is no verdict (or why the verdict is an ERROR)
    received: int = 0  # bytes handed to the scan
    scanned: int = 0  # bytes sent to the backend (received, cut at the limit)
    failovers: int = 0  # backends that failed before this verdict
    seconds: float = 0.0

    @property
    def infected(self) -> bool:
        return self.verdict is not None and self.verdict.infected

    @property
    def clean(self) -> bool:
        return self.verdict is not None and self.verdict.clean

    @property
    def failed(self) -> bool:
        return not (self.infected or self.clean)

    @property
    def signature(self) -> str:
        return self.verdict.detail if self.infected else ""


class MessageScan:
    """Stream one message to a backend; `finish()` gives the ScanResult.

    Not thread-safe: one message belongs to one thread (libmilter calls a
    connection's callbacks in order).
    """

    def __init__(self, pool: BackendPool, limit: int, spool_dir: str | None = None):
        self.pool = pool
        self.limit = limit
        self.received = 0
        self.kept = 0  # bytes in the spool (received, cut at the limit)
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=spool_dir)
        self._tried: list[Backend] = []
        self._backend: Backend | None = None
        self._stream: InstreamWriter | None = None
        self._failovers = 0
        self._started = time.monotonic()
        self._connect_pending = True

    def write(self, data: bytes) -> None:
        self.received += len(data)
        room = self.limit - self.kept
        if room <= 0:
            return
        data = data[:room]
        self._spool.write(data)
        self.kept += len(data)
        if self._connect_pending:
            self._connect_pending = False
            self._open_next()
        elif self._stream is not None:
            try:
                self._stream.write(data)
            except ClamdError as exc:
                self._drop_stream(str(exc))

    def _open_next(self) -> None:
        """Open a stream on the next backend not tried yet, replaying the spool into it."""
        for backend in self.pool.candidates():
            if backend in self._tried:
                continue
            self._tried.append(backend)
            try:
                stream = backend.client.open_instream(self.limit)
                self._replay(stream)
            except ClamdError as exc:
                self._failovers += 1
                self.pool.failed(backend, str(exc))
                continue
            self._backend, self._stream = backend, stream
            return
        self._backend = self._stream = None

    def _replay(self, stream: InstreamWriter) -> None:
        try:
            self._spool.seek(0)
            while piece := self._spool.read(REPLAY_PIECE):
                stream.write(piece)
        except ClamdError:
            stream.close()
            raise
        finally:
            self._spool.seek(0, 2)

    def _drop_stream(self, reason: str) -> None:
        self._failovers += 1
        if self._stream is not None:
            self._stream.close()
        self.pool.failed(self._backend, reason)
        self._backend = self._stream = None

    def finish(self) -> ScanResult:
        """The verdict of the first backend that gives one, trying each at most once."""
        failure = ""
        error_verdict: tuple[Verdict, Address] | None = None
        if self._connect_pending:  # nothing was written: an empty message
            self._connect_pending = False
            self._open_next()
        while True:
            if self._stream is None:
                self._open_next()
                if self._stream is None:
                    break
            backend, stream = self._backend, self._stream
            try:
                verdict = stream.finish()
            except ClamdError as exc:
                failure = str(exc)
                self._drop_stream(failure)
                continue
            self._stream = None
            self.pool.answered(backend)
            if verdict.status is Status.ERROR:
                # The backend works but could not scan this message (a size
                # limit, a dying worker): the next one may.
                error_verdict = (verdict, backend.address)
                failure = f"{backend.address}: {verdict.text}"
                continue
            return self._result(verdict, backend.address)
        if error_verdict is not None:
            return self._result(None, error_verdict[1], failure)
        if not failure:
            failure = "no backend could be reached" if self._tried else "no backend configured"
        return self._result(None, None, failure)

    def _result(self, verdict: Verdict | None, backend: Address | None,
                failure: str = "") -> ScanResult:
        return ScanResult(verdict, backend, failure, self.received, self.kept, self._failovers,
                          time.monotonic() - self._started)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._spool.close()

    def __enter__(self) -> MessageScan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def scan_bytes(pool: BackendPool, data: bytes | memoryview, limit: int) -> ScanResult:
    """Scan a message held in memory (its first `limit` bytes) with failover, in asyncio."""
    started = time.monotonic()
    view = memoryview(data)[:limit]
    failure = ""
    failovers = 0
    error_backend: Address | None = None
    for backend in pool.candidates():
        try:
            verdict = await backend.async_client.instream(
                view[start:start + REPLAY_PIECE] for start in range(0, len(view), REPLAY_PIECE))
        except ClamdError as exc:
            failure = str(exc)
            failovers += 1
            pool.failed(backend, failure)
            continue
        pool.answered(backend)
        if verdict.status is Status.ERROR:
            failure = f"{backend.address}: {verdict.text}"
            error_backend = backend.address
            continue
        return ScanResult(verdict, backend.address, "", len(data), len(view), failovers,
                          time.monotonic() - started)
    if not failure:
        failure = "no backend could be reached"
    return ScanResult(None, error_backend, failure, len(data), len(view), failovers,
                      time.monotonic() - started)
