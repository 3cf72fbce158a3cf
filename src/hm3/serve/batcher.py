"""Dynamic batching: requests that arrive together share one forward pass, and a long request
takes turns with the others instead of holding the model until it is done.

Each admitted request becomes a job (its texts, their :class:`~hm3.serve.engine.Cost` and
its :class:`~hm3.serve.engine.Mode`). A collector task on the event loop takes the oldest job
and adds later ones of the same mode while the batch's cost — rows (texts, or windows of long
texts) × the longest row, the padded tokens of a forward pass — stays within
``max_batch_tokens``, waiting at most ``max_wait_ms`` after the oldest job arrived for others
to join (a job of another mode closes the batch, so the order stays first come, first
served). A batch runs on the single model thread (never on the event loop) one forward pass
(at most ``max_batch_tokens``) at a time, in turn with the other batches started: the jobs
that arrive while any batch runs start at once (no waiting for others to join), ahead of the
next pass of a batch whose pass they arrived during. So a document of a hundred windows delays
a short request by one pass, not by all of its own.
Admission is bounded: with ``max_concurrent`` requests already admitted, the next is refused at
once (:class:`Overloaded`, answered 429). A job whose client went away (the route cancels its
future) is dropped from the queue and from a batch still being collected, so it never runs; a
running batch whose clients all went away stops at its next turn. A batch that fails is retried
one job at a time (the warning says why it failed) so one bad request cannot fail its
neighbours.

What it does not: validate texts, count tokens (the caller does) or format answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hm3.model.predictor import Scoring
from hm3.serve.engine import Cost, Engine, Mode, Scores

log = logging.getLogger("hm3")


class Overloaded(Exception):
    """``max_concurrent`` requests are already admitted."""


class ShuttingDown(Exception):
    """The server stops; queued jobs are not run."""


@dataclass
class _Job:
    texts: list[str]
    costs: list[Cost]
    mode: Mode
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class _Running:
    """A batch being scored, pass by pass."""

    jobs: list[_Job]
    work: Scoring


Observer = Callable[[int, int], None]


class Batcher:
    """Admission, queue and the model thread of one server."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_tokens: int,
        max_wait_ms: float,
        max_concurrent: int,
        on_batch: Observer | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_concurrent = max_concurrent
        self.on_batch = on_batch
        self.admitted = 0
        self.ready = False
        self.warm_up_error: str | None = None
        self._warm: asyncio.Task | None = None
        self._queue: deque[_Job] = deque()
        self._running: deque[_Running] = deque()  # batches taking turns on the model thread
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hm3-model")

    @property
    def queued(self) -> int:
        """Jobs waiting for a forward pass (not counting the one running, nor those whose client
        went away: they stay in the queue, skipped, until they reach its head)."""
        return sum(not job.future.done() for job in list(self._queue))

    async def start(self) -> None:
        """Start the collector and the warm-up on the model thread; :attr:`ready` after it.

        Requests that arrive during the warm-up queue behind it on the model thread.
        """
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._collect(), name="hm3-batcher")
        self._warm = asyncio.create_task(self._warm_up(), name="hm3-warm-up")

    async def _warm_up(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._model, self.engine.warm_up)
        except Exception as exc:  # the server stays up, not ready: /readyz says why
            self.warm_up_error = f"{type(exc).__name__}: {exc}"
            log.error("warm-up failed: %s", self.warm_up_error)
            return
        self.ready = True

    async def stop(self) -> None:
        """Stop collecting; queued jobs fail with :class:`ShuttingDown`; the thread exits."""
        self.ready = False
        for task in (self._warm, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        waiting = [*self._queue, *(job for run in self._running for job in run.jobs)]
        self._queue.clear()
        self._running.clear()
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(ShuttingDown())
        self._model.shutdown(wait=True, cancel_futures=True)

    @contextlib.contextmanager
    def admission(self):
        """Hold one of the ``max_concurrent`` places for the request's lifetime.

        Raises:
            Overloaded: every place is taken.
        """
        if self.admitted >= self.max_concurrent:
            raise Overloaded()
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def submit(self, texts: Sequence[str], costs: Sequence[Cost], mode: Mode) -> Scores:
        """Queue ``texts`` (with their costs) to be scored in ``mode``; wait for the scores."""
        if self._wakeup is None:
            raise ShuttingDown()
        future = asyncio.get_running_loop().create_future()
        job = _Job(list(texts), list(costs), mode, future)
        self._queue.append(job)
        self._wakeup.set()
        return await job.future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        running = self._running
        while True:
            if not running:  # idle: wait for a batch
                batch = [job for job in await self._next_batch() if not job.future.done()]
                if batch:  # empty: every client went away while the batch was collected
                    await self._begin(batch)
                continue
            await self._take_arrivals()
            run = running.popleft()
            if all(job.future.done() for job in run.jobs):
                continue  # every client went away: no more passes
            try:
                scores = await loop.run_in_executor(self._model, self._advance, run)
            except Exception as exc:
                await self._retry_alone(run.jobs, exc)
                continue
            if scores is None:  # its next pass after those that arrived during this one
                await self._take_arrivals()
                running.append(run)
                continue
            lo = 0
            for job in run.jobs:
                hi = lo + len(job.texts)
                if not job.future.done():  # a client that went away has a cancelled future
                    job.future.set_result(scores.rows(lo, hi))
                lo = hi

    async def _take_arrivals(self) -> None:
        """Start the jobs queued now, without waiting for more: they join the turns."""
        while self._live_head():
            batch = [job for job in await self._next_batch(wait=False) if not job.future.done()]
            if batch:
                await self._begin(batch)

    def _advance(self, run: _Running) -> Scores | None:
        """On the model thread: ``run``'s next forward pass, and its scores after the last."""
        run.work.step()
        return self.engine.finish(run.work, run.jobs[0].mode) if run.work.done else None

    async def _begin(self, batch: list[_Job]) -> None:
        """Encode ``batch`` on the model thread and add it to the turns."""
        texts = [t for job in batch for t in job.texts]
        rows, longest = _size(batch)
        if self.on_batch is not None:
            self.on_batch(len(texts), rows * longest)
        loop = asyncio.get_running_loop()
        try:
            work = await loop.run_in_executor(
                self._model, self.engine.begin, texts, batch[0].mode, longest
            )
        except Exception as exc:
            await self._retry_alone(batch, exc)
            return
        self._running.append(_Running(batch, work))

    async def _retry_alone(self, batch: list[_Job], exc: Exception) -> None:
        """One request's fault must not fail the others: each job runs alone."""
        log.warning(
            "a batch of %d requests failed (%s); retrying them one by one",
            len(batch),
            _one_line(exc),
        )
        for job in batch:
            await self._run_alone(job)

    async def _run_alone(self, job: _Job) -> None:
        if job.future.done():
            return
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(
                self._model, self.engine.infer, job.texts, job.mode, _size([job])[1]
            )
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result(scores)

    async def _next_batch(self, *, wait: bool = True) -> list[_Job]:
        """The oldest live job and the later ones that fit the budget, within the wait (without
        ``wait``: those queued now, and a live one must be)."""
        assert self._wakeup is not None
        while not self._live_head():
            self._wakeup.clear()
            await self._wakeup.wait()
        first = self._queue[0]
        deadline = first.arrived + self.max_wait
        batch: list[_Job] = []
        while True:
            while self._live_head():
                job = self._queue[0]
                if batch and job.mode != first.mode:
                    return batch  # another mode: the next batch starts with it
                rows, longest = _size([*batch, job])
                if batch and rows * longest > self.max_batch_tokens:
                    return batch  # full: the job waits for the next pass
                batch.append(self._queue.popleft())
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not wait:
                return batch
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # TimeoutError on 3.11+
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _live_head(self) -> bool:
        """Drop cancelled jobs at the head of the queue; True if a live one is left there."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return bool(self._queue)


def _size(jobs: Sequence[_Job]) -> tuple[int, int]:
    """Rows and the longest row's tokens of a batch of jobs."""
    costs = [c for job in jobs for c in job.costs]
    return sum(c.rows for c in costs), max(c.longest for c in costs)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 300 characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 300 else text[:299] + "…"
