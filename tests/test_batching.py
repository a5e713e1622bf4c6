"""Dynamic batching with real threads and a fake model that records what it was given."""

import threading
import time

import pytest

from app.core.batching import Batcher, DeadlineExceeded, Overloaded


class FakeModel:
    def __init__(self, seconds: float = 0.05, fail_on=None):
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list] = []
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.batches.append(list(items))
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("model blew up")
        return [item * 10 for item in items]


def run_concurrently(batcher, groups, stagger=0.0):
    results, errors = {}, {}

    def call(key, items):
        try:
            results[key] = batcher.submit(items).results
        except Exception as exc:  # collected for the assertions
            errors[key] = exc

    threads = [threading.Thread(target=call, args=(i, g)) for i, g in enumerate(groups)]
    for t in threads:
        t.start()
        time.sleep(stagger)
    for t in threads:
        t.join(10)
    return results, errors


def test_lone_request_runs_at_once():
    model = FakeModel(seconds=0)
    batcher = Batcher(model, max_batch_size=8)
    t0 = time.perf_counter()
    assert batcher.submit([1]).results == [10]
    assert time.perf_counter() - t0 < 0.02 and model.batches == [[1]]


def test_requests_arriving_while_busy_share_a_batch():
    model = FakeModel(seconds=0.1)
    batcher = Batcher(model, max_batch_size=8)
    results, errors = run_concurrently(batcher, [[i] for i in range(9)], stagger=0.005)
    assert not errors and all(results[i] == [i * 10] for i in range(9))
    # The first runs alone; the 8 that queued meanwhile run as one batch.
    assert [len(b) for b in model.batches] == [1, 8]


def test_batches_never_exceed_the_limit_and_keep_order():
    model = FakeModel(seconds=0.02)
    batcher = Batcher(model, max_batch_size=3)
    results, errors = run_concurrently(batcher, [list(range(10)), [100, 101]])
    assert not errors and results[0] == [i * 10 for i in range(10)] and results[1] == [1000, 1010]
    assert max(len(b) for b in model.batches) <= 3


def test_full_queue_answers_503_at_once():
    model = FakeModel(seconds=0.3)
    batcher = Batcher(model, max_batch_size=2, max_queue=4)
    results, errors = run_concurrently(batcher, [[i] for i in range(8)], stagger=0.01)
    assert {type(e) for e in errors.values()} == {Overloaded}
    assert len(results) >= 5  # one running + four queued
    overloaded = next(iter(errors.values()))
    assert overloaded.kind == "overloaded" and overloaded.retry_after == 1


def test_deadline_answers_504_and_leaves_no_work_behind():
    model = FakeModel(seconds=0.3)
    batcher = Batcher(model, max_batch_size=1, timeout_s=0.2)
    results, errors = run_concurrently(batcher, [[1], [2], [3]], stagger=0.01)
    assert 0 in results and set(errors) == {1, 2}
    assert all(isinstance(e, DeadlineExceeded) and e.kind == "deadline" for e in errors.values())
    time.sleep(0.4)
    assert [b for b in model.batches] == [[1]]  # the timed-out items never reached the model
    assert batcher.queued() == 0


def test_a_failed_batch_fails_its_requests_only():
    model = FakeModel(seconds=0.05, fail_on=2)
    batcher = Batcher(model, max_batch_size=8)
    results, errors = run_concurrently(batcher, [[1], [2], [3]], stagger=0.01)
    assert results[0] == [10]
    assert {str(e) for e in errors.values()} == {"model blew up"}
    assert batcher.submit([4]).results == [40]  # and the batcher still works


def test_optional_delay_gathers_a_fuller_batch():
    model = FakeModel(seconds=0)
    batcher = Batcher(model, max_batch_size=4, max_delay_s=0.2)
    results, errors = run_concurrently(batcher, [[i] for i in range(4)], stagger=0.01)
    assert not errors and [len(b) for b in model.batches] == [4]


@pytest.mark.parametrize("workers", [16])
def test_many_threads_all_get_their_own_answers(workers):
    batcher = Batcher(FakeModel(seconds=0.01), max_batch_size=4, max_queue=64)
    results, errors = run_concurrently(batcher, [[i, i + 1000] for i in range(workers)])
    assert not errors and all(results[i] == [i * 10, (i + 1000) * 10] for i in range(workers))


def test_requests_being_decoded_count_against_the_queue():
    batcher = Batcher(FakeModel(), max_batch_size=4, max_queue=3)
    with batcher.admit(2):
        batcher.check_capacity()  # 2 of 3 places taken: still room
        with pytest.raises(Overloaded), batcher.admit(2):
            pass
        with batcher.admit(1), pytest.raises(Overloaded):
            batcher.check_capacity()
    batcher.check_capacity()  # all places given back
    assert batcher.submit([1, 2, 3]).results == [10, 20, 30]


def test_refusals_are_paced_by_the_shed_delay():
    batcher = Batcher(FakeModel(), max_queue=1, shed_delay_s=0.1)
    with batcher.admit(1):
        t0 = time.perf_counter()
        with pytest.raises(Overloaded):
            batcher.check_capacity()
        assert 0.09 <= time.perf_counter() - t0 < 0.5
