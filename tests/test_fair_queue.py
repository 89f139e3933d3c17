"""The fair waiting line in front of the engines, without a model."""

from __future__ import annotations

import asyncio

import pytest
from schulki.runtime.errors import Busy
from schulki.runtime.fair_queue import FairScheduler


def run(coro):
    return asyncio.run(coro)


async def _hold(scheduler: FairScheduler, user: str, order: list[str], release: asyncio.Event, name: str):
    async with scheduler.turn(user):
        order.append(name)
        await release.wait()


def test_a_user_with_waiting_requests_goes_behind_a_user_with_none():
    async def scenario():
        s = FairScheduler(slots=1, max_queued=10, max_queued_per_user=10)
        order: list[str] = []
        gates = {n: asyncio.Event() for n in ("a1", "a2", "a3", "b1")}
        tasks = {}
        for name in ("a1", "a2", "a3", "b1"):
            tasks[name] = asyncio.create_task(_hold(s, name[0], order, gates[name], name))
            await asyncio.sleep(0)
        assert order == ["a1"] and s.queue_length == 3
        for name in ("a1", "b1", "a2", "a3"):
            gates[name].set()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks.values())
        return order

    assert run(scenario()) == ["a1", "b1", "a2", "a3"]


def test_turns_alternate_between_users_round_robin():
    async def scenario():
        s = FairScheduler(slots=1, max_queued=20, max_queued_per_user=10)
        order: list[str] = []
        release = asyncio.Event()
        release.set()
        blocker = asyncio.Event()
        first = asyncio.create_task(_hold(s, "x", order, blocker, "x0"))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(_hold(s, "a", order, release, f"a{i}")) for i in range(3)]
        tasks += [asyncio.create_task(_hold(s, "b", order, release, f"b{i}")) for i in range(3)]
        await asyncio.sleep(0)
        blocker.set()
        await asyncio.gather(first, *tasks)
        return order

    assert run(scenario()) == ["x0", "a0", "b0", "a1", "b1", "a2", "b2"]


def test_students_with_one_question_each_are_served_first_come_first_served():
    """A student who was served a minute ago and asks again waits behind nobody who came later: serving the one served
    least recently first (the rule before) let later arrivals pass and made the longest waits of a class longer."""

    async def scenario():
        s = FairScheduler(slots=1, max_queued=10, max_queued_per_user=10)
        order: list[str] = []
        gates = {n: asyncio.Event() for n in ("a0", "b0", "a1", "c0")}
        gates["a0"].set()
        await _hold(s, "a", order, gates["a0"], "a0")  # a asked and was answered
        tasks = [asyncio.create_task(_hold(s, "b", order, gates["b0"], "b0"))]
        await asyncio.sleep(0)
        for name in ("a1", "c0"):  # while b is answered, a asks again, then c asks for the first time
            tasks.append(asyncio.create_task(_hold(s, name[0], order, gates[name], name)))
            await asyncio.sleep(0)
        for g in gates.values():
            g.set()
        await asyncio.gather(*tasks)
        return order

    assert run(scenario()) == ["a0", "b0", "a1", "c0"]


def test_a_full_line_refuses_at_once_with_a_message_for_students():
    async def scenario():
        s = FairScheduler(slots=1, max_queued=2, max_queued_per_user=5)
        gate = asyncio.Event()
        tasks = [asyncio.create_task(_hold(s, f"u{i}", [], gate, str(i))) for i in range(3)]
        await asyncio.sleep(0)
        assert s.running == 1 and s.queue_length == 2
        with pytest.raises(Busy) as refused:
            async with s.turn("late"):
                pass
        gate.set()
        await asyncio.gather(*tasks)
        return str(refused.value)

    message = run(scenario())
    assert "Bitte warte" in message and "2 requests are waiting" in message


def test_one_user_cannot_fill_the_line():
    async def scenario():
        s = FairScheduler(slots=1, max_queued=10, max_queued_per_user=2)
        gate = asyncio.Event()
        tasks = [asyncio.create_task(_hold(s, "greedy", [], gate, str(i))) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            async with s.turn("greedy"):
                pass
        other = asyncio.create_task(_hold(s, "other", [], gate, "o"))
        await asyncio.sleep(0)
        assert s.queue_length == 3
        gate.set()
        await asyncio.gather(*tasks, other)

    run(scenario())


def test_a_cancelled_waiter_leaves_the_line_and_frees_nothing_twice():
    async def scenario():
        s = FairScheduler(slots=1, max_queued=5, max_queued_per_user=5)
        gate = asyncio.Event()
        holder = asyncio.create_task(_hold(s, "a", [], gate, "a"))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(_hold(s, "b", [], gate, "b"))
        await asyncio.sleep(0)
        assert s.queue_length == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert s.queue_length == 0
        gate.set()
        await holder
        assert s.running == 0
        async with s.turn("c"):
            assert s.running == 1

    run(scenario())


def test_several_slots_go_to_several_users_and_one_user_holds_at_most_its_cap():
    async def scenario():
        s = FairScheduler(slots=4, max_queued=10, max_queued_per_user=10, max_running_per_user=2)
        order: list[str] = []
        gates = {n: asyncio.Event() for n in ("a1", "a2", "a3", "a4", "b1", "c1")}
        tasks = {n: asyncio.create_task(_hold(s, n[0], order, gates[n], n)) for n in ("a1", "a2", "a3", "a4")}
        await asyncio.sleep(0)
        # Two slots stay free, yet the third and fourth tab of a wait.
        assert order == ["a1", "a2"] and s.running == 2 and s.queue_length == 2
        for n in ("b1", "c1"):
            tasks[n] = asyncio.create_task(_hold(s, n[0], order, gates[n], n))
            await asyncio.sleep(0)
        assert order == ["a1", "a2", "b1", "c1"] and s.running == 4 and s.queue_length == 2
        gates["b1"].set()
        await asyncio.sleep(0.01)
        assert order[-1] not in ("a3", "a4")  # b's slot is free, but a still holds two
        gates["a1"].set()
        await asyncio.sleep(0.01)
        assert order[-1] == "a3" and s.running == 3
        for g in gates.values():
            g.set()
        await asyncio.gather(*tasks.values())
        return order

    assert run(scenario()) == ["a1", "a2", "b1", "c1", "a3", "a4"]


@pytest.mark.parametrize(("cpus", "slots", "per_user"), [(1, 2, 1), (2, 2, 1), (8, 8, 2), (16, 16, 4)])
def test_document_processing_slots_follow_the_cores_and_a_user_gets_a_share(cpus, slots, per_user):
    from schulki.config import RetrievalConfig
    from schulki.retrieval.ingest import ingest_slots

    scheduler = ingest_slots(RetrievalConfig(), cpus=cpus)
    assert (scheduler.slots, scheduler.max_running_per_user) == (slots, per_user)
    chosen = ingest_slots(RetrievalConfig(max_concurrent_ingests=6, ingests_per_user=3), cpus=cpus)
    assert (chosen.slots, chosen.max_running_per_user) == (6, 3)
