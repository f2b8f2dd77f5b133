"""Dynamic batching: infill requests that arrive together share the sampler's forward passes.

The model is single, so batches run one at a time on one worker thread; the asyncio side keeps
accepting requests and cancels meanwhile. Each request's deadline is its arrival time plus its
budget, so time spent queued counts against the budget.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .protocol import INTERNAL_ERROR, INVALID_REQUEST, ProtocolError

log = logging.getLogger("mercury_engine")

LATENCY_WINDOW = 1000  # latency percentiles are over the most recent completed infills


class RequestCancelled(Exception):
    """The infill was cancelled (cancel request, vanished client, engine shutting down)."""


class Worker:
    """One daemon thread that runs blocking calls (model load, warmup, batches) in order.
    Daemon, so a forward pass in progress never holds up the process exit."""

    def __init__(self) -> None:
        self._calls: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="mercury-model", daemon=True).start()

    def submit(self, fn: Callable, *args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._calls.put((loop, fut, fn, args))
        return fut

    def _loop(self) -> None:
        while True:
            loop, fut, fn, args = self._calls.get()
            try:
                outcome = (fn(*args), None)
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(_settle, fut, *outcome)
            except RuntimeError:  # the event loop is already closed: nobody is waiting
                pass


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def percentiles(window: deque) -> dict[str, float | None]:
    values = sorted(window)
    if not values:
        return {"p50": None, "p95": None, "p99": None}

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}


@dataclass
class Stats:
    requests: int = 0  # request frames of any method
    completed: int = 0  # infills answered with a result
    cancelled: int = 0  # infills ended by cancel, a vanished client or shutdown
    errors: int = 0  # error replies other than "request cancelled"
    batches: int = 0
    batched_jobs: int = 0
    forwards: int = 0
    tokens: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))  # total_ms
    queue_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    model_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def record(self, timings: dict, tokens: int) -> None:
        self.completed += 1
        self.forwards += timings["forwards"]
        self.tokens += tokens
        self.latencies_ms.append(timings["total_ms"])
        self.queue_ms.append(timings["queue_ms"])
        self.model_ms.append(timings["model_ms"])

    def to_dict(self) -> dict:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "errors": self.errors,
            "batches": self.batches,
            "mean_batch_size": round(self.batched_jobs / self.batches, 3) if self.batches else 0.0,
            "forwards": self.forwards,
            "tokens": self.tokens,
            "latency_ms": percentiles(self.latencies_ms),
            "queue_ms": percentiles(self.queue_ms),
            "model_ms": percentiles(self.model_ms),
        }


@dataclass
class Job:
    params: Any  # InfillParams
    owner: Any  # the connection that sent it
    req_id: Any
    arrival: float
    future: asyncio.Future
    cancelled: bool = False  # read by the worker thread between steps
    started: float | None = None

    @property
    def deadline(self) -> float:
        return self.arrival + self.params.budget_ms / 1000.0


def wire_result(result, job: Job, done: float) -> dict:
    """The `infill` result map of the protocol."""
    started = job.started if job.started is not None else done
    return {
        "completions": [{"text": c.text, "tokens": int(c.tokens), "confidence": float(c.confidence)} for c in result.completions],
        "timings": {
            "queue_ms": round((started - job.arrival) * 1000, 3),
            "model_ms": round(float(result.model_ms), 3),
            "total_ms": round((done - job.arrival) * 1000, 3),
            "steps": int(result.steps),
            "forwards": int(result.forwards),
        },
        "truncated": bool(result.truncated),
    }


class Scheduler:
    def __init__(self, sampler, worker: Worker, stats: Stats, max_batch: int = 16, collect_ms: float = 2.0, max_queue: int = 1024):
        self.sampler = sampler
        self.worker = worker
        self.stats = stats
        self.max_batch = max_batch
        self.collect_s = collect_ms / 1000.0
        self.max_queue = max_queue
        self.queue: deque[Job] = deque()
        self.jobs: dict[tuple[int, Any], Job] = {}  # (id(owner), req_id) -> job, for cancel
        self.running: list[Job] = []
        self.closing = False
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.running)

    def submit(self, params, owner, req_id) -> Job:
        """Queue one request now (synchronously, so a `cancel` right behind it finds it)."""
        key = (id(owner), req_id)
        pending = self.jobs.get(key)
        if pending is not None and not pending.future.done():
            raise ProtocolError(INVALID_REQUEST, f"id {req_id!r} is already used by a pending infill on this connection")
        if self.closing:
            raise RequestCancelled()
        if len(self.queue) >= self.max_queue:
            raise ProtocolError(INTERNAL_ERROR, f"engine overloaded: {len(self.queue)} infill requests queued")
        job = Job(params, owner, req_id, time.monotonic(), asyncio.get_running_loop().create_future())
        self.jobs[key] = job
        self.queue.append(job)
        self._wakeup.set()
        return job

    async def result(self, job: Job) -> dict:
        """The job's result map; RequestCancelled if it was cancelled."""
        try:
            return await job.future
        finally:
            if self.jobs.get((id(job.owner), job.req_id)) is job:
                del self.jobs[(id(job.owner), job.req_id)]
            if not job.future.done():  # the awaiting task itself was cancelled
                self._drop(job)

    def cancel(self, owner, req_id) -> bool:
        job = self.jobs.get((id(owner), req_id))
        if job is None or job.future.done():
            return False
        self._drop(job)
        return True

    def cancel_owner(self, owner) -> int:
        """A client vanished: its requests stop using steps."""
        mine = [j for j in self.jobs.values() if j.owner is owner and not j.future.done()]
        for job in mine:
            self._drop(job)
        return len(mine)

    async def close(self, wait_s: float = 5.0) -> None:
        """Cancel everything; give a batch in progress a moment to notice (between steps)."""
        self.closing = True
        for job in list(self.jobs.values()):
            if not job.future.done():
                self._drop(job)
        self._task.cancel()
        deadline = time.monotonic() + wait_s
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _drop(self, job: Job) -> None:
        job.cancelled = True
        self.stats.cancelled += 1
        if not job.future.done():
            job.future.set_exception(RequestCancelled())
        # a dropped job no longer waits; its queue slot is skipped when the next batch is taken

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self.collect_s)  # requests arriving together join this batch
            batch = self._take_batch()
            if not self.queue:
                self._wakeup.clear()
            if batch:
                try:
                    await self._run(batch)
                except Exception as exc:  # keep serving whatever went wrong with this batch
                    for job in batch:
                        self._fail(job, exc)

    def _take_batch(self) -> list[Job]:
        batch: list[Job] = []
        while self.queue and len(batch) < self.max_batch:
            job = self.queue.popleft()
            if not job.cancelled:
                batch.append(job)
        return batch

    async def _run(self, batch: list[Job]) -> None:
        started = time.monotonic()
        for job in batch:
            job.started = started
        self.running = batch
        self.stats.batches += 1
        self.stats.batched_jobs += len(batch)
        try:
            results = await self._decode(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            # one bad request must not sink its batch mates: decode each on its own
            log.warning("batch of %d failed (%s: %s); retrying one by one", len(batch), type(exc).__name__, exc)
            for job in batch:
                if job.cancelled:
                    continue
                try:
                    self._finish(job, (await self._decode([job]))[0])
                except Exception as single_exc:
                    self._fail(job, single_exc)
            return
        finally:
            self.running = []
        for job, result in zip(batch, results):
            self._finish(job, result)

    async def _decode(self, batch: list[Job]) -> list:
        params = [j.params for j in batch]
        deadlines = [j.deadline for j in batch]

        def is_cancelled(i: int) -> bool:
            return self.closing or batch[i].cancelled

        results = await self.worker.submit(self.sampler.infill_batch, params, deadlines, is_cancelled)
        if len(results) != len(batch):
            raise RuntimeError(f"sampler returned {len(results)} results for {len(batch)} requests")
        return results

    def _finish(self, job: Job, result) -> None:
        if job.future.done():  # cancelled while decoding: its -32800 is already on the way
            return
        if result is None:
            self._drop(job)
            return
        try:
            wire = wire_result(result, job, time.monotonic())
        except Exception as exc:
            self._fail(job, exc)
            return
        self.stats.record(wire["timings"], sum(c["tokens"] for c in wire["completions"]))
        job.future.set_result(wire)

    def _fail(self, job: Job, exc: Exception) -> None:
        log.exception("infill %r failed", job.req_id, exc_info=exc)
        if not job.future.done():
            job.future.set_exception(ProtocolError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}"))
