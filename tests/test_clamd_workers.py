"""The worker pool: a loader process per generation that loads and forks the
workers, workers forked on demand up to the pool's size, idle workers retired
after IdleTimeout (clamd's idle scan threads exit after it too), jobs that
wait for a busy pool, a worker lost in the middle of a job (and how it died),
jobs handed over to a newer pool, a load that fails and a loader that dies.

The pool runs jobs of a kind the workers do not know (they answer
Finished() at once), and its "database" is a stand-in returned by a load
function, so no engine is needed: what is tested is the processes and the
hand-over, not scanning.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import pytest

from clammail.clamd import pathscan
from clammail.clamd.jobs import Finished
from clammail.clamd.workers import LoadFailed, PoolClosed, WorkerLost, WorkerPool


@dataclass(frozen=True)
class Noop:
    """A job no worker knows: answered with Finished() alone."""


def stand_in_load():
    return None, "stand-in database"


def failing_load():
    raise ValueError("Malformed database: test.hdb line 1")


async def job(pool: WorkerPool, started: list | None = None) -> list:
    replies = []
    async for reply in pool.run(Noop(), on_start=(lambda: started.append(1)) if started is not None else None):
        replies.append(reply)
    return replies


def alive(pid: int) -> bool:
    """Whether `pid` runs (workers are the loader's children, not ours)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def make_pool():
    pools = []

    def make(size: int, idle_timeout: float = 30.0, load=stand_in_load) -> WorkerPool:
        pool = WorkerPool(load, pathscan.WalkOptions(), size, idle_timeout=idle_timeout)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.kill_now()


def test_forked_on_demand_then_retired_after_idle_timeout(make_pool):
    # Long enough that no worker is retired while the others are still being forked.
    pool = make_pool(size=3, idle_timeout=2.0)

    async def scenario():
        assert await pool.start() == "stand-in database"
        assert len(pool.workers) == 1  # one is kept ready
        assert alive(pool.loader_pid) and pool.loader_pid not in pool.pids()
        first = pool.workers[0].pid
        started = []
        results = await asyncio.gather(*(job(pool, started) for _ in range(5)))
        assert results == [[Finished()]] * 5 and len(started) == 5
        assert len(pool.workers) == 3 and pool.idle == 3  # grew to its size, no further
        extra = [w.pid for w in pool.workers if w.pid != first]
        for _ in range(200):
            if len(pool.workers) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(pool.workers) == 1 and pool.idle == 1  # back to the one kept
        # The most recently used worker stays; the retired ones exited and were collected.
        kept = pool.workers[0].pid
        for _ in range(100):
            if not any(alive(pid) for pid in extra if pid != kept):
                break
            await asyncio.sleep(0.05)
        assert not any(alive(pid) for pid in extra if pid != kept)
        assert await job(pool) == [Finished()]

    run(scenario())


def test_jobs_wait_for_a_busy_pool(make_pool):
    pool = make_pool(size=1)

    async def scenario():
        await pool.start()
        results = await asyncio.gather(*(job(pool) for _ in range(20)))
        assert results == [[Finished()]] * 20
        assert len(pool.workers) == 1 and pool.pending == 0

    run(scenario())


def test_a_worker_lost_in_a_job_is_replaced(make_pool):
    pool = make_pool(size=1)

    async def scenario():
        await pool.start()
        victim = pool.workers[0].pid
        os.kill(victim, signal.SIGSTOP)  # it takes the job but never answers
        blocked = asyncio.ensure_future(job(pool))
        waiting = asyncio.ensure_future(job(pool))  # waits for the only worker
        await asyncio.sleep(0.2)
        assert pool.pending == 2
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerLost) as lost:
            await blocked
        # The loader reported how it died.
        assert lost.value.reason == "worker process killed by SIGKILL" and lost.value.pid == victim
        # The waiting job gets a new worker.
        assert await waiting == [Finished()]
        assert victim not in pool.pids() and len(pool.workers) == 1

    run(scenario())


def test_close_ends_waiting_jobs_and_workers(make_pool):
    pool = make_pool(size=1)

    async def scenario():
        await pool.start()
        pid, loader = pool.workers[0].pid, pool.loader_pid
        os.kill(pid, signal.SIGSTOP)
        blocked = asyncio.ensure_future(job(pool))
        waiting = asyncio.ensure_future(job(pool))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await pool.close(timeout=0.5)
        assert time.monotonic() - started < 30
        for pending in (blocked, waiting):
            with pytest.raises(WorkerLost):
                await pending
        assert not alive(pid) and not alive(loader)

    run(scenario())


def test_waiting_jobs_move_to_the_next_pool(make_pool):
    """A reload hands the jobs that still wait for a worker to the new pool;
    the running one finishes where it started."""
    old, new = make_pool(size=1), make_pool(size=1)

    async def scenario():
        await old.start()
        busy = old.workers[0].pid
        os.kill(busy, signal.SIGSTOP)
        running = asyncio.ensure_future(job(old))
        waiting = asyncio.ensure_future(job(old))
        await asyncio.sleep(0.1)
        await new.start()
        old.hand_over()
        with pytest.raises(PoolClosed):
            await waiting
        assert await job(new) == [Finished()]
        assert old.pending == 1  # still running on the old generation
        os.kill(busy, signal.SIGCONT)
        assert await running == [Finished()]
        assert old.pending == 0

    run(scenario())


def test_a_failed_load_says_why(make_pool):
    pool = make_pool(size=1, load=failing_load)

    async def scenario():
        with pytest.raises(LoadFailed, match="Malformed database: test.hdb line 1"):
            await pool.start()
        await asyncio.sleep(0.3)
        assert not alive(pool.loader_pid)

    run(scenario())


def test_a_lost_loader_breaks_the_generation_but_not_its_workers(make_pool):
    pool = make_pool(size=2)
    broken = []

    async def scenario():
        await pool.start()
        pool.on_broken = broken.append
        os.kill(pool.loader_pid, signal.SIGKILL)
        for _ in range(100):
            if broken:
                break
            await asyncio.sleep(0.05)
        assert broken == [pool] and pool.broken
        # The worker it had still serves; no new one can be forked.
        assert await job(pool) == [Finished()]
        assert await asyncio.gather(job(pool), job(pool)) == [[Finished()]] * 2
        assert len(pool.workers) == 1

    run(scenario())
