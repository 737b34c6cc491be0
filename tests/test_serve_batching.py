"""The dynamic batcher on its own: concurrent submissions share model runs, answers keep their order, admission is
bounded, a failing batch fails only its own requests, a cancelled request's image is skipped."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pintopic.serve.batching import DynamicBatcher, Overloaded


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_concurrent_items_are_gathered_into_batches_and_answered_in_order():
    batches = []

    def double(items):
        batches.append(list(items))
        time.sleep(0.02)  # the model is busy: the next batch gathers meanwhile
        return [2 * item for item in items]

    async def scenario():
        batcher = DynamicBatcher(double, max_batch=4, max_wait_ms=20, capacity=20)
        await batcher.start()
        try:
            async with batcher.admit(10):
                answers = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        finally:
            await batcher.stop()
        return answers, batcher.admitted

    answers, admitted = run(scenario())
    assert [result for result, _ in answers] == [2 * i for i in range(10)]
    assert [len(batch) for batch in batches] == [4, 4, 2] and [i for batch in batches for i in batch] == list(range(10))
    assert {info.size for _, info in answers} == {4, 2} and all(info.seconds >= 0.02 for _, info in answers)
    assert admitted == 0


def test_a_lone_item_waits_at_most_max_wait():
    async def scenario():
        batcher = DynamicBatcher(lambda items: items, max_batch=8, max_wait_ms=30, capacity=4)
        await batcher.start()
        started = time.perf_counter()
        async with batcher.admit(1):
            result, info = await batcher.submit("x")
        await batcher.stop()
        return result, info, time.perf_counter() - started

    result, info, seconds = run(scenario())
    assert result == "x" and info.size == 1 and 0.025 <= seconds < 1.0


def test_admission_is_bounded_and_released():
    async def scenario():
        batcher = DynamicBatcher(lambda items: items, max_batch=2, max_wait_ms=0, capacity=3)
        await batcher.start()
        held = batcher.admit(2)
        with pytest.raises(Overloaded, match="queue 3"):
            batcher.admit(2)  # all or nothing: 2 + 2 > 3
        async with held, batcher.admit(1):
            assert batcher.admitted == 3
            with pytest.raises(Overloaded):
                batcher.admit(1)
        await batcher.stop()
        return batcher.admitted

    assert run(scenario()) == 0


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return items

    async def scenario():
        batcher = DynamicBatcher(flaky, max_batch=4, max_wait_ms=5, capacity=8)
        await batcher.start()
        async with batcher.admit(2):
            first = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
        async with batcher.admit(1):
            second = await batcher.submit("c")
        await batcher.stop()
        return first, second

    first, second = run(scenario())
    assert all(isinstance(error, RuntimeError) for error in first) and second[0] == "c"


def test_a_cancelled_request_is_skipped():
    release, seen = threading.Event(), []

    def slow(items):
        seen.append(list(items))
        release.wait(10)
        return items

    async def scenario():
        batcher = DynamicBatcher(slow, max_batch=4, max_wait_ms=0, capacity=8)
        await batcher.start()
        async with batcher.admit(3):
            busy = asyncio.create_task(batcher.submit("busy"))  # occupies the model
            await asyncio.sleep(0.05)
            gone = asyncio.create_task(batcher.submit("gone"))
            kept = asyncio.create_task(batcher.submit("kept"))
            await asyncio.sleep(0.01)
            gone.cancel()
            release.set()
            results = [(await busy)[0], (await kept)[0]]
        await batcher.stop()
        return results

    assert run(scenario()) == ["busy", "kept"]
    assert seen == [["busy"], ["kept"]]
