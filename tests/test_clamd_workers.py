"""The worker pool: forked on demand up to its size, idle workers retired
after IdleTimeout (clamd's idle scan threads exit after it too), jobs that
wait for a busy pool, and a worker lost in the middle of a job.

The pool runs jobs of a kind the workers do not know (they answer
("done",) at once), so no engine is needed: what is tested is the
processes and the hand-over, not scanning.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from clammail.clamd import pathscan
from clammail.clamd.workers import WorkerLost, WorkerPool


async def job(pool: WorkerPool, started: list | None = None) -> list[tuple]:
    replies = []
    async for reply in pool.run(("noop",), on_start=(lambda: started.append(1)) if started is not None else None):
        replies.append(reply)
    return replies


def alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # collected already
    return done == 0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def make_pool():
    pools = []

    def make(size: int, idle_timeout: float = 30.0) -> WorkerPool:
        pool = WorkerPool(None, pathscan.WalkOptions(), size, idle_timeout=idle_timeout)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.kill_now()


def test_forked_on_demand_then_retired_after_idle_timeout(make_pool):
    pool = make_pool(size=3, idle_timeout=0.3)

    async def scenario():
        pool.start()
        assert len(pool.workers) == 1  # one is kept ready
        first = pool.workers[0].pid
        started = []
        results = await asyncio.gather(*(job(pool, started) for _ in range(5)))
        assert results == [[("done",)]] * 5 and len(started) == 5
        assert len(pool.workers) == 3 and pool.idle == 3  # grew to its size, no further
        extra = [w.pid for w in pool.workers if w.pid != first]
        await asyncio.sleep(1.5)
        assert len(pool.workers) == 1 and pool.idle == 1  # back to the one kept
        # The most recently used worker stays; the retired ones exited and were collected.
        assert all(not alive(pid) for pid in extra if pid != pool.workers[0].pid)
        assert await job(pool) == [("done",)]

    run(scenario())


def test_jobs_wait_for_a_busy_pool(make_pool):
    pool = make_pool(size=1)

    async def scenario():
        pool.start()
        results = await asyncio.gather(*(job(pool) for _ in range(20)))
        assert results == [[("done",)]] * 20
        assert len(pool.workers) == 1 and pool.pending == 0

    run(scenario())


def test_a_worker_lost_in_a_job_is_replaced(make_pool):
    pool = make_pool(size=1)

    async def scenario():
        pool.start()
        victim = pool.workers[0].pid
        os.kill(victim, signal.SIGSTOP)  # it takes the job but never answers
        blocked = asyncio.ensure_future(job(pool))
        waiting = asyncio.ensure_future(job(pool))  # waits for the only worker
        await asyncio.sleep(0.2)
        assert pool.pending == 2
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerLost):
            await blocked
        # The waiting job gets a new worker.
        assert await waiting == [("done",)]
        assert victim not in pool.pids() and len(pool.workers) == 1

    run(scenario())


def test_close_ends_waiting_jobs_and_workers(make_pool):
    pool = make_pool(size=1)

    async def scenario():
        pool.start()
        pid = pool.workers[0].pid
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
        assert not alive(pid)

    run(scenario())
