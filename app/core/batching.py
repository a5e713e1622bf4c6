"""Dynamic batching inside one worker, with a bounded queue and per-request deadlines.

Leader/follower: the request that finds the model idle runs a batch itself, at once (no added
latency at low load). Requests that arrive meanwhile queue up; when the batch ends, the next
batch holds everything that queued, up to `max_batch_size`. A leader whose own items are done
hands the "baton" to the owner of the next queued item and returns its response.

There is no dedicated batching thread, so the same code serves gunicorn's gthread workers
(real threads) and gevent workers (where `threading` is monkey-patched to greenlets and the
forward pass is pushed to a real thread through `offload`). Primitives are looked up on the
`threading` module at construction time, after gevent has patched it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from app.core.errors import DeadlineExceeded, Overloaded

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"


def run_here(fn: Callable, *args):
    return fn(*args)


class Done(NamedTuple):
    """A request's results, in order, and how long its slowest item queued and ran."""

    results: list
    queue_s: float
    run_s: float


class _Job:
    __slots__ = ("item", "deadline", "wake", "state", "result", "error", "lead", "queued_at", "started_at", "ended_at")

    def __init__(self, item: Any, deadline: float, now: float):
        self.item, self.deadline = item, deadline
        self.wake = threading.Event()
        self.state, self.result, self.error, self.lead = QUEUED, None, None, False
        self.queued_at = self.started_at = self.ended_at = now


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[list], Sequence],
        max_batch_size: int = 8,
        max_queue: int = 64,
        max_delay_s: float = 0.0,
        timeout_s: float = 30.0,
        offload: Callable = run_here,
        shed_delay_s: float = 0.0,
        on_depth: Callable[[int], None] | None = None,
    ):
        self.run_batch, self.offload = run_batch, offload
        self.on_depth = on_depth or (lambda depth: None)  # queue-depth gauge
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.max_delay_s, self.timeout_s, self.shed_delay_s = max_delay_s, timeout_s, shed_delay_s
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._preparing = 0  # admitted, still being decoded
        self._busy = False

    def queued(self) -> int:
        return len(self._queue)

    def check_capacity(self) -> None:
        """Refuse when full, before the request's body is even read."""
        if self._preparing + len(self._queue) >= self.max_queue:
            self._refuse()

    def _refuse(self) -> None:
        """503, after `shed_delay_s`: a pause that costs a sleeping thread, not CPU.

        A client that retries at once (ab does) would otherwise resend refusals as fast as
        the CPU can answer them, and refusals, not the model, would take the cores.
        """
        time.sleep(self.shed_delay_s)
        raise Overloaded()

    @contextmanager
    def admit(self, n: int):
        """Hold `n` places while their images are decoded, so decoding counts as waiting."""
        with self._cond:
            full = self._preparing + len(self._queue) + n > self.max_queue
            if not full:
                self._preparing += n
        if full:
            self._refuse()
        try:
            yield
        finally:
            with self._cond:
                self._preparing -= n

    def submit(self, items: Sequence) -> Done:
        """Run `items` through the model, batched with other requests; results in order."""
        now = time.monotonic()
        mine = [_Job(item, now + self.timeout_s, now) for item in items]
        with self._cond:
            full = len(self._queue) + len(mine) > self.max_queue
            if not full:
                self._queue.extend(mine)
                self.on_depth(len(self._queue))
                lead = not self._busy
                self._busy = True
                self._cond.notify_all()
        if full:
            self._refuse()
        if lead:
            self._lead(mine)
        for job in mine:
            self._await(job, mine)
        return Done(
            [job.result for job in mine],
            max(job.started_at - job.queued_at for job in mine),
            max(job.ended_at - job.started_at for job in mine),
        )

    def _await(self, job: _Job, mine: list[_Job]) -> None:
        while job.state not in (DONE, CANCELLED):
            remaining = job.deadline - time.monotonic()
            woke = job.wake.wait(max(remaining, 0))
            with self._cond:
                job.wake.clear()
                baton, job.lead = job.lead, False
                if not woke:  # deadline: withdraw whatever of ours has not started
                    self._cancel(mine)
                    if baton:  # handed over just as we timed out: hand it on
                        self._pass_baton()
            if baton and job.state == QUEUED:
                self._lead(mine)
            elif not woke and job.state == RUNNING:
                # The batch holding it is on the model; its result would come too late.
                raise DeadlineExceeded(self.timeout_s)
        if job.state == CANCELLED:
            raise DeadlineExceeded(self.timeout_s)
        if job.error is not None:
            raise job.error

    def _lead(self, mine: list[_Job]) -> None:
        """Run batches until our own items are done, then pass the baton on."""
        while True:
            batch = self._take_batch()
            if batch:
                self._execute(batch)
            with self._cond:
                if not self._queue:
                    self._busy = False
                    return
                if all(job.state in (DONE, CANCELLED) for job in mine):
                    self._pass_baton()
                    return

    def _take_batch(self) -> list[_Job]:
        with self._cond:
            if self.max_delay_s and len(self._queue) < self.max_batch_size:
                until = time.monotonic() + self.max_delay_s
                while len(self._queue) < self.max_batch_size and time.monotonic() < until:
                    self._cond.wait(until - time.monotonic())
            now, batch = time.monotonic(), []
            while self._queue and len(batch) < self.max_batch_size:
                job = self._queue.popleft()
                if job.deadline <= now:  # its client has given up: don't spend the model on it
                    job.state = CANCELLED
                    job.wake.set()
                    continue
                job.state, job.started_at = RUNNING, now
                batch.append(job)
            self.on_depth(len(self._queue))
            return batch

    def _execute(self, batch: list[_Job]) -> None:
        try:
            results = self.offload(self.run_batch, [job.item for job in batch])
        except Exception as exc:  # handed to every request in the batch; each logs it as a 500
            for job in batch:
                job.error = exc
        else:
            for job, result in zip(batch, results, strict=True):
                job.result = result
        ended = time.monotonic()
        for job in batch:
            job.state, job.ended_at = DONE, ended
            job.wake.set()

    def _pass_baton(self) -> None:
        """Caller holds the lock and the queue is not empty."""
        if not self._queue:
            self._busy = False
            return
        head = self._queue[0]
        head.lead = True
        head.wake.set()

    def _cancel(self, mine: list[_Job]) -> None:
        for job in mine:
            if job.state == QUEUED:
                job.state = CANCELLED
                with contextlib.suppress(ValueError):
                    self._queue.remove(job)
        self.on_depth(len(self._queue))
