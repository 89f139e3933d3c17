"""Gradio's queue on the gateway's event loop: each mounted page runs every event as it comes, and while it has no
event it looks for one every QUEUE_IDLE_POLL_S, not every millisecond, so an idle page does not keep waking the loop
that streams every student's answer.

The app is a real ``create_app``; the queue's own loops run for a moment on a loop of the test's, with the queue
empty, and every pause they take is recorded.
"""

from __future__ import annotations

import asyncio
import threading
import types

import gradio.queueing
import pytest
from schulki.config import Config
from schulki.gateway.app import create_app
from schulki.gateway.ui import QUEUE_IDLE_POLL_S, QUEUE_PROGRESS_POLL_S
from starlette.routing import Mount


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> list[gradio.Blocks]:
    config = Config(data_dir=tmp_path_factory.mktemp("gateway"))
    app = create_app(config)
    found = [route.app.get_blocks() for route in app.routes if isinstance(route, Mount) and hasattr(route.app, "get_blocks")]
    assert len(found) == 2  # the German page at / and the English one at /en
    return found


def test_each_page_runs_every_event_as_it_comes(pages):
    for blocks in pages:
        queue = blocks._queue
        assert all(event_queue.concurrency_limit is None for event_queue in queue.event_queue_per_concurrency_id.values())
        assert blocks.max_threads == Config().gateway.ui_running_events


def test_an_idle_queue_pauses_between_looks(pages, monkeypatch):
    pauses: list[float] = []
    real_sleep = asyncio.sleep
    here = threading.current_thread()

    async def recorded_sleep(delay: float, *args, **kwargs):
        if threading.current_thread() is here:  # not the queues of other gateways this test session runs
            pauses.append(delay)
        await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(gradio.queueing, "asyncio", types.SimpleNamespace(**{**vars(asyncio), "sleep": recorded_sleep}))

    async def idle_for_a_moment(queue: gradio.queueing.Queue) -> None:
        queue.stopped = False
        loops = [asyncio.ensure_future(queue.start_processing()), asyncio.ensure_future(queue.start_progress_updates())]
        await real_sleep(0.3)
        queue.stopped = True
        await asyncio.wait_for(asyncio.gather(*loops), 10)

    for blocks in pages:
        assert len(blocks._queue) == 0
        asyncio.run(idle_for_a_moment(blocks._queue))
    assert pauses, "the queue's loops did not run"
    assert min(pauses) >= QUEUE_IDLE_POLL_S, sorted(set(pauses))
    assert QUEUE_PROGRESS_POLL_S in pauses
    # each page's two loops together look at most about 0.3 s / 10 ms + 0.3 s / 50 ms times (a few more where the
    # loop wakes late; polling every millisecond looked hundreds of times)
    assert len(pauses) <= 2 * (0.3 / QUEUE_IDLE_POLL_S + 0.3 / QUEUE_PROGRESS_POLL_S + 6), len(pauses)
