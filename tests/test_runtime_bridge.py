"""The runtime's thread bridge and upload spooler, on real threads, a real event loop and real files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from contextlib import aclosing

import pytest
from schulki.runtime.errors import TooLarge
from schulki.runtime.spool import Spool
from schulki.runtime.threads import Bridge, stream_from_task, stream_from_thread


def test_a_thread_s_items_arrive_in_order_then_its_return_value():
    def work(emit, cancelled):
        for i in range(50):
            emit(i)
        return "done"

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return [item async for item in stream_from_thread(pool, work)]

    assert asyncio.run(main()) == [*range(50), "done"]


def test_a_thread_s_error_reaches_the_reader_after_the_items_before_it():
    def work(emit, cancelled):
        emit("first")
        raise ValueError("kaputt")

    async def main():
        seen = []
        with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="kaputt"):
            async for item in stream_from_thread(pool, work):
                seen.append(item)
        return seen

    assert asyncio.run(main()) == ["first"]


def test_closing_the_stream_early_stops_the_thread_and_waits_for_it():
    state = {"stopped_at": None, "finished": False}

    def work(emit, cancelled: threading.Event):
        for i in range(10_000):
            if cancelled.is_set():
                state["stopped_at"] = i
                break
            emit(i)
            time.sleep(0.001)
        time.sleep(0.2)  # cleaning up takes a while: the close must wait for it
        state["finished"] = True

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            async with aclosing(stream_from_thread(pool, work)) as items:
                async for item in items:
                    if item == 3:
                        break
            return state["finished"]

    assert asyncio.run(main()) is True
    assert state["stopped_at"] is not None and state["stopped_at"] < 10_000


def test_a_task_s_reports_arrive_before_its_result_and_closing_early_cancels_it():
    async def work(emit):
        for i in range(3):
            emit(i)
            await asyncio.sleep(0)
        return "parsed"

    async def forever(emit):
        emit("started")
        await asyncio.sleep(3600)

    async def main():
        assert [item async for item in stream_from_task(work)] == [0, 1, 2, "parsed"]
        async with aclosing(stream_from_task(forever)) as items:
            async for item in items:
                assert item == "started"
                break
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []


def test_ready_takes_only_what_piled_up_and_stops_before_another_kind():
    async def main():
        bridge: Bridge[object] = Bridge()
        for item in ("a", "b", 7, "c"):
            bridge.put_here(item)
        first = await bridge.get()
        return first, bridge.ready(lambda item: isinstance(item, str)), await bridge.get()

    assert asyncio.run(main()) == ("a", ["b"], 7)


def test_the_spool_keeps_an_upload_within_the_limit(tmp_path):
    with Spool(tmp_path, 10, suffix=".txt") as spool:
        spool.write(b"Hallo")
        spool.write(b"Welt!")
    assert spool.path.read_bytes() == b"HalloWelt!" and spool.size == 10 and spool.path.suffix == ".txt"
    spool.discard()
    assert list(tmp_path.iterdir()) == []


def test_the_spool_refuses_the_piece_that_passes_the_limit_and_leaves_no_file(tmp_path):
    with pytest.raises(TooLarge, match=r"zu groß.*0\.00 MB") as caught, Spool(tmp_path, 8) as spool:
        spool.write(b"12345")
        spool.write(b"6789")
    assert "(The upload is over the limit of" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
