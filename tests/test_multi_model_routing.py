"""Three real inference processes serving two model names behind one gateway: routing by model, by shortest line, and through failures.

The catalog model gemma-3-270m runs on two nodes, one with the Q4_K_M file and
one with a Q5_K_M made from it (as two cards get two quants): both serve it
under its one name. demo-b runs on the third node (the demo GGUF under a name of
its own). Which node answered is read from the nodes' own logs ("chat done"
lines), not from the gateway.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.multi_model_support import NodeProcess, gateway_config, running_gateway, second_quant

MODEL = "gemma-3-270m"
"""The catalog model both a-nodes serve, each with another quant."""
PROMPT = [{"role": "user", "content": "Nenne eine Farbe."}]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    logs = tmp_path_factory.mktemp("node-logs")
    q5 = second_quant(tmp_path_factory.mktemp("quants"))
    started = [NodeProcess("", logs), NodeProcess("", logs, model_path=q5), NodeProcess("demo-b", logs)]
    try:
        for node in started:
            node.start()
        yield {"a1": started[0], "a2": started[1], "b": started[2]}
    finally:
        for node in started:
            node.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, nodes):
    config = gateway_config(tmp_path_factory.mktemp("gateway"), [nodes["a1"].address, nodes["a2"].address, nodes["b"].address])
    with running_gateway(config) as running:
        running.wait_until(lambda: running.gateway._services.serving_models() == ["demo-b", MODEL], 60, "both models serving")
        yield running


@pytest.fixture(scope="module")
def key(stack):
    return stack.gateway.accounts.add_user("route-anna", "student").api_key


def complete(stack, key: str, model: str, max_tokens: int = 4) -> dict:
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
        json={"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0},
    )
    assert response.status_code == 200, response.text
    return response.json()


def stream(stack, key: str, model: str, max_tokens: int, first_text: threading.Event | None = None) -> dict:
    """A streamed chat; says whether text arrived, whether it finished, and the error the stream ended with."""
    result = {"text": "", "finish": None, "error": None}
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.7, "stream": True}
    with httpx.stream(
        "POST", f"{stack.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60
    ) as response:
        if response.status_code != 200:
            response.read()
            result["error"] = response.json()["error"]
            return result
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                result["error"] = event["error"]
                continue
            for choice in event["choices"]:
                result["text"] += choice["delta"].get("content") or ""
                result["finish"] = choice["finish_reason"] or result["finish"]
            if result["text"] and first_text is not None:
                first_text.set()
    return result


def models_list(stack, key: str) -> list[str]:
    response = httpx.get(f"{stack.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200
    return [model["id"] for model in response.json()["data"]]


def test_every_request_is_answered_by_a_node_of_the_model_it_names(stack, nodes, key):
    before = {name: node.answered() for name, node in nodes.items()}
    requests = [MODEL] * 6 + ["demo-b"] * 4
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda model: complete(stack, key, model), requests))
    assert [answer["model"] for answer in answers] == requests
    served = {name: node.answered() - before[name] for name, node in nodes.items()}
    assert served["a1"] + served["a2"] == 6 and served["b"] == 4, served  # the node logs: demo-b's node never got a gemma chat
    assert served["a1"] > 0 and served["a2"] > 0, served  # both quants took part


def test_models_lists_each_model_once_with_the_alias_and_stays_the_same(stack, key):
    lists = [models_list(stack, key) for _ in range(5)]
    assert all(found == lists[0] for found in lists)
    assert lists[0] == ["schulki-chat", "demo-b", MODEL, "schulki-embeddings", "whisper-1"]


def test_every_quant_of_a_catalog_model_serves_under_its_one_name(stack, nodes):
    infos = {name: stack.node(nodes[name].address).info for name in ("a1", "a2")}
    assert {info.served_model for info in infos.values()} == {MODEL}
    assert {info.quant for info in infos.values()} == {"Q4_K_M", "Q5_K_M"}  # what the Admin tab shows per node


def test_a_name_with_the_quant_from_before_still_reaches_every_quant_of_the_model(stack, nodes, key):
    before = {name: nodes[name].answered() for name in ("a1", "a2")}
    old_names = ["gemma-3-270m-q4_k_m", "gemma-3-270m-q5_k_m"] * 3
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda model: complete(stack, key, model), old_names))
    assert {answer["model"] for answer in answers} == {MODEL}
    served = {name: nodes[name].answered() - before[name] for name in ("a1", "a2")}
    assert sum(served.values()) == 6 and min(served.values()) > 0, served  # the old name is not pinned to its quant's node
    models = stack.gateway.models
    models.accounts.set_setting("chat_default_model", "gemma-3-270m-q5_k_m")  # as an admin chose it before
    models.accounts.set_setting("chat_models_student", json.dumps(["gemma-3-270m-q4_k_m"]))
    try:
        assert models.default() == MODEL
        student = stack.gateway.accounts.add_user("route-ben", "student")
        assert models.allowed(student.account) == [MODEL]
        assert complete(stack, student.api_key, "gemma-3-270m-q4_k_m")["model"] == MODEL
    finally:
        models.accounts.set_setting("chat_default_model", "")
        models.accounts.set_setting("chat_models_student", "")


def test_an_unknown_model_gives_openais_404(stack, key):
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": "demo-c", "messages": PROMPT},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found" and response.json()["error"]["param"] == "model"


def test_with_one_node_busy_new_requests_go_to_the_idle_one(stack, nodes, key):
    stack.wait_until(lambda: all(stack.node(n.address).in_flight == 0 for n in nodes.values()), 60, "no chat running")
    first_text = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        long_chat = pool.submit(stream, stack, key, MODEL, 300, first_text)
        assert first_text.wait(60), long_chat.result() if long_chat.done() else "no text"
        busy = next(name for name in ("a1", "a2") if stack.node(nodes[name].address).in_flight == 1)
        idle = "a2" if busy == "a1" else "a1"
        before = {name: nodes[name].answered() for name in ("a1", "a2")}
        for _ in range(4):  # one after the other: round-robin would send every second one to the busy node
            complete(stack, key, MODEL, max_tokens=2)
        still_running = not long_chat.done()
        after = {name: nodes[name].answered() for name in ("a1", "a2")}
        long_chat.result()
    assert still_running, "the long chat ended before the short ones: the test did not measure anything"
    assert after[idle] - before[idle] == 4 and after[busy] == before[busy], (busy, before, after)


def test_a_node_killed_mid_load_loses_no_request_that_had_not_started_on_it_and_is_used_again_after_a_restart(stack, nodes, key):
    victim, survivor = nodes["a1"], nodes["a2"]
    stack.wait_until(lambda: all(stack.node(n.address).in_flight == 0 for n in nodes.values()), 60, "no chat running")
    models_before = models_list(stack, key)
    failed_before = stack.node(victim.address).failed

    def chat(_):
        return stream(stack, key, MODEL, 40)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(chat, i) for i in range(8)]
        # wait until the victim is generating (its line holds one running chat and more waiting), then kill it
        stack.wait_until(lambda: stack.node(victim.address).in_flight >= 2, 60, "chats on the victim")
        lost_on_victim = stack.node(victim.address).in_flight
        victim.kill()
        results = [future.result(timeout=120) for future in futures]  # a hang would fail here
    # the kill hit a running chat and at least one waiting (more may have joined the victim's line while it was killed)
    assert stack.node(victim.address).failed - failed_before >= lost_on_victim >= 2
    failed = [r for r in results if r["finish"] is None]
    for r in failed:  # only a chat that had started on the killed node may fail, and it says so in the stream
        assert r["error"]["code"] == "answer_broke_off" and r["text"], r
    assert len(failed) <= 1, results  # one sequence decodes at a time: at most the one running on the victim
    assert sum(1 for r in results if r["finish"] in ("stop", "length")) >= 7
    assert models_list(stack, key) == models_before  # the model stays listed while a node is down
    stack.wait_until(lambda: not stack.node(victim.address).healthy, 10, "the gateway leaving the dead node out")

    victim.start()
    stack.wait_until(lambda: stack.node(victim.address).healthy, 30, "the restarted node serving again")
    before = victim.answered()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: complete(stack, key, MODEL), range(6)))
    assert victim.answered() > before  # used again, without a gateway restart
    assert survivor.process.poll() is None


def test_the_pool_weighs_reported_lines_per_slot_and_never_picks_another_model():
    from schulki.gateway.nodes.clients import Node, Pool, ServiceDown
    from schulki.inference.v1 import inference_service_pb2 as pb

    def node(model: str, queue: int, running: int, slots: int, in_flight: int = 0) -> Node:
        info = pb.GetModelInfoResponse(served_model=model, queue_length=queue, running_sequences=running, parallel_sequences=slots)
        return Node(f"{model}-{queue}-{slots}", None, None, healthy=True, model=model, info=info, in_flight=in_flight)

    big = node("m", queue=3, running=4, slots=8)  # 7 of 8 slots' worth: line 0.875
    small = node("m", queue=1, running=1, slots=1)  # line 2
    other = node("x", queue=0, running=0, slots=1)  # idle, but another model
    pool = Pool("inference", "svc", [small, big, other])
    assert pool.pick("m") is big
    big.in_flight = 20  # this gateway's own requests count at once, before the node reports them
    assert pool.pick("m") is small
    small.healthy = big.healthy = False
    with pytest.raises(ServiceDown):
        pool.pick("m")
    assert pool.pick("x") is other


def test_nodes_taken_out_of_the_settings_file_or_the_nodes_file_leave_the_line_without_a_restart(tmp_path, monkeypatch):
    import asyncio

    from schulki.config import load_config
    from schulki.gateway.nodes.clients import Services

    nodes_file = tmp_path / "nodes.json"
    settings = tmp_path / "schulki.toml"

    def write(configured: list[str], from_up: list[str]) -> None:
        nodes = "".join(f'\n[[gateway.inference_nodes]]\naddress = "{a}"\nmodel = "gemma-3-270m-q4_k_m"\n' for a in configured)
        settings.write_text(
            f'data_dir = "{tmp_path}"\n[gateway]\nnodes_file = "{nodes_file}"\nembeddings_addresses = ["127.0.0.1:1"]\n{nodes}'
        )
        nodes_file.write_text(json.dumps([{"address": a, "model": "demo-b"} for a in from_up]))

    async def run() -> list[list[str]]:
        write(["127.0.0.11:50051", "127.0.0.12:50051"], ["127.0.0.1:2", "127.0.0.1:3"])
        monkeypatch.setenv("SCHULKI_CONFIG", str(settings))
        services = Services(load_config())
        await services.start()
        seen = [sorted(n.address for n in services.inference_nodes())]
        models = {n.address: n.model for n in services.inference_nodes()}
        write(["127.0.0.12:50051"], ["127.0.0.1:3"])  # one of each taken out (file sizes change, so their stamps do)
        await services.check_health()
        seen.append(sorted(n.address for n in services.inference_nodes()))
        write(["127.0.0.12:50051", "127.0.0.14:50051"], ["127.0.0.1:3"])
        await services.check_health()
        seen.append(sorted(n.address for n in services.inference_nodes()))
        await services.close()
        assert models["127.0.0.11:50051"] == "gemma-3-270m"  # a name from before with the quant stands for the model's one name
        return seen

    seen = asyncio.run(run())
    assert seen == [
        ["127.0.0.11:50051", "127.0.0.12:50051", "127.0.0.1:2", "127.0.0.1:3"],
        ["127.0.0.12:50051", "127.0.0.1:3"],
        ["127.0.0.12:50051", "127.0.0.14:50051", "127.0.0.1:3"],
    ]
