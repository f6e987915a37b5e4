"""The scan backends of a milter or proxy: clamd-protocol daemons with failover.

A backend that refuses a connection, times out or answers garbage is marked
down and skipped; a thread PINGs the backends that are down every
`probe_interval` seconds and brings them back when they answer PONG.
Messages go to the backends that are up, in turn (clamav-milter picks one
at random; taking turns spreads the load as evenly). When every backend is
down, each is still tried once per message, so mail flows again the moment
one comes back, without waiting for the next probe.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from clammail.clamd.client import Address, AsyncClamd, Clamd, ClamdError


class Backend:
    """One daemon: its client and whether it is believed to be up."""

    def __init__(self, address: Address, timeout: float):
        self.address = address
        self.client = Clamd(address, timeout=timeout)  # for threads (the milter)
        self.async_client = AsyncClamd(address, timeout=timeout)  # for asyncio (the proxy)
        self.up = True  # until it fails: the first message finds out
        self.down_since: float | None = None
        self.last_error = ""

    def __repr__(self) -> str:
        return f"Backend({self.address}, {'up' if self.up else 'down'})"


class BackendPool:
    """The backends of one service, shared by all its threads."""

    def __init__(self, addresses: list[Address], timeout: float, probe_interval: float,
                 log, on_change: Callable[[Backend], None] | None = None):
        if not addresses:
            raise ValueError("No ClamdSocket specified")
        self.backends = [Backend(a, timeout) for a in addresses]
        self.probe_interval = probe_interval
        self.log = log
        self.on_change = on_change  # metrics: a backend went up or down
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None

    def candidates(self) -> list[Backend]:
        """The order in which to try the backends for one message: those up first, in turn."""
        start = next(self._turn)
        n = len(self.backends)
        rotated = [self.backends[(start + i) % n] for i in range(n)]
        return [b for b in rotated if b.up] + [b for b in rotated if not b.up]

    def failed(self, backend: Backend, reason: str) -> None:
        """The backend did not give a verdict (connection, timeout, garbage): mark it down."""
        with self._lock:
            backend.last_error = reason
            if not backend.up:
                return
            backend.up = False
            backend.down_since = time.monotonic()
        self.log.warning(f"Backend {backend.address} is down: {reason}")
        if self.on_change:
            self.on_change(backend)

    def answered(self, backend: Backend) -> None:
        """The backend gave a proper answer: it is up."""
        with self._lock:
            if backend.up:
                return
            backend.up = True
            backend.down_since = None
        self.log.info(f"Backend {backend.address} is up again")
        if self.on_change:
            self.on_change(backend)

    @property
    def any_up(self) -> bool:
        return any(b.up for b in self.backends)

    # -- probing ---------------------------------------------------------------

    def probe_once(self) -> None:
        """PING every backend that is down; bring back those that answer PONG."""
        for backend in self.backends:
            if backend.up or self._stop.is_set():
                continue
            try:
                alive = backend.client.ping()
            except ClamdError as exc:
                backend.last_error = str(exc)
                continue
            if alive:
                self.answered(backend)

    def start_probing(self) -> None:
        if self._prober is None:
            self._prober = threading.Thread(target=self._probe_loop, name="backend-probe",
                                            daemon=True)
            self._prober.start()

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.probe_interval):
            self.probe_once()
            if not self.any_up:
                self.log.warning("No clamd server appears to be available")

    def stop(self) -> None:
        self._stop.set()
        if self._prober is not None:
            self._prober.join(timeout=5)
            self._prober = None
