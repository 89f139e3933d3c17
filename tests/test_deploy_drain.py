"""The drain of a rolling upgrade, with real inference processes behind a real gateway.

The roll-out stops a node's containers (SIGTERM) before it recreates them and
waits until the gateway's own health view has the node out of its line
(``healthcheck gateway --node ... --expect down``, deploy/roles/schulki_stack/tasks/drain.yml).
Here two ``schulki serve inference`` processes serve one model: the one running
a long streamed answer is told to stop; it must leave the gateway's line at once,
new chats must go to the other node meanwhile, and its running answer must finish.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from schulki.runtime.client import SERVING, health_status
from schulki.runtime.healthcheck import check_node

from tests.multi_model_support import NodeProcess, gateway_config, running_gateway
from tests.test_multi_model_routing import complete, stream


def test_a_node_told_to_stop_leaves_the_gateways_line_at_once_and_finishes_its_running_answer(tmp_path, monkeypatch):
    # Longer than the answer takes on a loaded machine: the grace period is what lets it finish.
    monkeypatch.setenv("SCHULKI_RUNTIME__GRACE_PERIOD_S", "300")
    nodes = [NodeProcess("demo-a", tmp_path), NodeProcess("demo-a", tmp_path)]
    try:
        for node in nodes:
            node.start()
        config = gateway_config(tmp_path / "gateway", [node.address for node in nodes])
        with running_gateway(config) as stack:
            healthz = f"{stack.url}/healthz"
            stack.wait_until(lambda: all(stack.node(n.address).healthy for n in nodes), 60, "both nodes serving")
            assert all(check_node(healthz, n.address, "serving", 5) is None for n in nodes)
            key = stack.gateway.accounts.add_user("drain-anna", "student").api_key
            first_text = threading.Event()
            with ThreadPoolExecutor(1) as pool:
                long_chat = pool.submit(stream, stack, key, "demo-a", 400, first_text)
                assert first_text.wait(60), long_chat.result() if long_chat.done() else "no text"
                stopping = next(n for n in nodes if stack.node(n.address).in_flight == 1)
                other = next(n for n in nodes if n is not stopping)
                before = {n.address: n.answered() for n in nodes}

                stopping.process.send_signal(signal.SIGTERM)
                stack.wait_until(lambda: health_status(stopping.address) != SERVING, 10, "the node no longer SERVING")
                stack.wait_until(lambda: check_node(healthz, stopping.address, "down", 5) is None, 10, "the gateway's view: the node out")
                for _ in range(3):
                    complete(stack, key, "demo-a", max_tokens=2)
                still_running = not long_chat.done()
                answer = long_chat.result(timeout=300)
            assert still_running, "the long answer ended before the node left the line: the test measured nothing"
            assert answer["error"] is None and answer["finish"] in ("stop", "length") and answer["text"], answer
            assert stopping.process.wait(300) == 0, "the node stops cleanly once its answer is done"
            assert stopping.answered() == before[stopping.address] + 1, "the stopping node finished its one running answer"
            assert other.answered() == before[other.address] + 3, "every new chat went to the node that stays"
            assert check_node(healthz, other.address, "serving", 5) is None

            # Back after the upgrade: the gateway's view has it serving again, as the roll-out waits for.
            stopping.start()
            stack.wait_until(lambda: check_node(healthz, stopping.address, "serving", 5) is None, 30, "the node back in line")
    finally:
        for node in nodes:
            node.stop()


def test_the_gateways_node_view_is_kept_off_the_lan(tmp_path):
    """/healthz names the nodes only to a client on loopback (the roll-out runs inside the gateway's container)."""
    config = gateway_config(tmp_path, ["127.0.0.1:1"])
    from schulki.gateway.app import create_app
    from schulki.gateway.context import Gateway
    from starlette.testclient import TestClient

    app = create_app(config, Gateway.create(config))
    with TestClient(app, client=("192.0.2.7", 50000), base_url="https://schulki.test") as lan:
        body = lan.get("/healthz").json()
    assert body["gateway"] == "ok" and "nodes" not in body
    with TestClient(app, client=("127.0.0.1", 50000), base_url="https://schulki.test") as local:
        body = local.get("/healthz").json()
    assert body["nodes"]["inference"] == {"127.0.0.1:1": False}
