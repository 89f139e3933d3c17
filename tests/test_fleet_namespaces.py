"""A school's fleet, each node its own host: two inference nodes (two quants of one model), embeddings, transcription,
retrieval (and Weaviate, where its server is built) and the gateway, each in its own network namespace with its own
address, TLS from the school CA and its own token, as the roll-out sets them up (tests/fleet_lab.py builds it).

Through the gateway: the services answer; a class spreads over both inference nodes; a node killed mid-class loses
at most its running answers and comes back; a node removed from the settings is gone without a restart; a node with
a token the gateway does not hold, or a certificate of another CA, gets no work. The figures (share of answers per
node, answers lost, seconds until a return was noticed) are printed at the end and, with SCHULKI_FLEET_FIGURES set,
written there as JSON (deploy/fleet-check prints them).
"""

from __future__ import annotations

import io
import json
import os
import signal
import ssl
import sys
import threading
import time
import wave
from pathlib import Path

import httpx
import pytest
from schulki.models.defaults import chat_model_path, embeddings_model_path, speech_model_path

from tests.fleet_lab import DOMAIN, Lab, stop, wait_for, why_no_namespaces
from tests.fleet_weaviate import start_weaviate
from tests.multi_model_support import NODE_ENV, second_quant
from tests.weaviate_support import weaviate_binary as cached_weaviate_binary

NO_NAMESPACES = why_no_namespaces()
pytestmark = pytest.mark.skipif(NO_NAMESPACES is not None, reason=NO_NAMESPACES or "")

MODEL = "gemma-3-270m"
HEALTH_INTERVAL_S = 1.0
PORTS = {"inference": 50051, "embeddings": 50052, "transcription": 50053, "retrieval": 50054}
SLOTS = 2
"""Answers each inference node decodes at once: a small lab PC's; more wait in its line."""
PROMPT = [{"role": "user", "content": "Nenne eine Farbe."}]
FIGURES: dict[str, object] = {}


class ByName(httpx.HTTPTransport):
    """Dials the address, checks the certificate for the name (as a classroom PC that resolved the name would)."""

    def __init__(self, name: str, **options):
        super().__init__(**options)
        self.name = name

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sni_hostname"] = self.name
        return super().handle_request(request)


class Fleet:
    """The running lab: hosts, processes, the gateway's settings file, and calls through the gateway."""

    def __init__(self, lab: Lab, folder: Path):
        self.lab, self.folder = lab, folder
        self.q5 = second_quant(folder)
        self.settings = folder / "gateway.toml"
        self.inference = ["inf1", "inf2"]
        self.process: dict[str, object] = {}
        self.key = ""
        self.client = lab.hosts["client"].threads(8)  # a classroom PC
        self.inside_gateway = lab.hosts["gw"].threads(1)  # the gateway's own loopback (its /healthz lists nodes only there)
        self.answers_started = threading.Semaphore(0)
        """Released once per streamed answer whose first text arrived."""
        self.tls = ssl.create_default_context(cafile=str(lab.ca / "ca.crt"))

    # -- the nodes ---------------------------------------------------------

    def log(self, name: str) -> Path:
        return self.folder / "logs" / f"{name}.log"

    def node_env(self, name: str, cert: str | None = None, ca_folder: Path | None = None, token_of: str | None = None) -> dict[str, str]:
        ca = ca_folder or self.lab.ca
        return {
            "SCHULKI_DATA_DIR": str(self.folder / "data" / name),
            "SCHULKI_RUNTIME__TLS_CERT_FILE": str(ca / f"{cert or name}.crt"),
            "SCHULKI_RUNTIME__TLS_KEY_FILE": str(ca / f"{cert or name}.key"),
            "SCHULKI_RUNTIME__TLS_CA_FILE": str(self.lab.ca / "ca.crt"),
            "SCHULKI_RUNTIME__SERVICE_TOKEN_FILE": str(self.lab.token_file(token_of or name)),
        }

    def start_node(self, name: str, service: str, env: dict[str, str]) -> None:
        host = self.lab.hosts[name]
        command = [sys.executable, "-m", "schulki.cli", "serve", service, "--host", host.address, "--port", str(PORTS[service])]
        already = self.log(name).read_text(errors="replace").count("serving on port") if self.log(name).exists() else 0
        process = self.lab.run(host, command, env, self.log(name))
        self.process[name] = process
        wait_for(
            lambda: self.log(name).read_text(errors="replace").count("serving on port") > already or process.poll() is not None,
            300,
            f"{name} ({service}) serving",
            interval=0.02,
        )
        assert process.poll() is None, self.log(name).read_text(errors="replace")[-3000:]

    def start_inference(self, name: str, model_path: Path, **env_options) -> None:
        env = {
            **NODE_ENV,
            **self.node_env(name, **env_options),
            "SCHULKI_INFERENCE__MODEL_PATH": str(model_path),
            "SCHULKI_INFERENCE__PARALLEL_SEQUENCES": str(SLOTS),
        }
        self.start_node(name, "inference", env)

    def answered(self, name: str) -> int:
        return self.log(name).read_text(errors="replace").count("chat done:") if self.log(name).exists() else 0

    def running(self, name: str) -> int:
        """Chats the node took and has not finished, from its own log."""
        text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
        return text.count("] chat: ") - text.count("chat done:")

    # -- the gateway ---------------------------------------------------------

    def write_settings(self, inference: list[str], tokens: dict[str, str]) -> None:
        """The gateway's settings file as the roll-out writes it: TLS, each node's own token, every node with its model."""
        hosts = self.lab.hosts
        token_file = self.lab.write_private(
            self.folder / "tokens" / "gateway-nodes.toml", "".join(f'"{hosts[n].fqdn}" = "{t}"\n' for n, t in tokens.items())
        )
        nodes = "".join(f'\n[[gateway.inference_nodes]]\naddress = "{hosts[n].fqdn}:50051"\nmodel = "{MODEL}"\n' for n in inference)
        text = f"""data_dir = "{self.folder / "data" / "gw"}"

[runtime]
tls_ca_file = "{self.lab.ca / "ca.crt"}"
node_tokens_file = "{token_file}"

[gateway]
host = "0.0.0.0"
port = 7860
https = true
tls_cert_file = "{self.lab.ca / "gw.crt"}"
tls_key_file = "{self.lab.ca / "gw.key"}"
embeddings_addresses = ["{hosts["emb"].fqdn}:50052"]
transcription_addresses = ["{hosts["asr"].fqdn}:50053"]
retrieval_addresses = ["{hosts["ret"].fqdn}:50054"]
health_interval_s = {HEALTH_INTERVAL_S}
max_chat_tokens = 64
requests_per_minute = {{ student = 10000, teacher = 10000, admin = 10000 }}
{nodes}"""
        partial = self.settings.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(self.settings)  # as an editor or the roll-out replaces the file: never half written

    def gateway_tokens(self) -> dict[str, str]:
        return {name: self.lab.tokens[name] for name in ("inf1", "inf2", "emb", "asr", "ret", "odd")}

    def start_gateway(self) -> None:
        from schulki.gateway.accounts.database import Accounts, database_url

        self.write_settings(self.inference, self.gateway_tokens())
        data = self.folder / "data" / "gw"
        data.mkdir(parents=True, exist_ok=True)
        self.key = Accounts(database_url(None, data)).add_user("fleet-anna", "student").api_key
        env = {"SCHULKI_CONFIG": str(self.settings)}
        self.process["gw"] = self.lab.run(self.lab.hosts["gw"], [sys.executable, "-m", "schulki.gateway"], env, self.log("gw"))
        wait_for(lambda: self.nodes().get("inference"), 120, "the gateway answering", interval=0.2)

    def _get(self, url: str) -> dict:
        try:
            with httpx.Client(verify=self.tls, timeout=5, trust_env=False) as client:
                return client.get(url, extensions={"sni_hostname": self.lab.hosts["gw"].fqdn}).json()
        except httpx.HTTPError:
            return {}

    def nodes(self) -> dict[str, dict[str, bool]]:
        """The gateway's view of every node: service -> address -> serving."""
        return self.inside_gateway.submit(self._get, "https://127.0.0.1:7860/healthz").result().get("nodes", {})

    def serving(self, name: str) -> bool | None:
        """Whether the gateway has the inference node in its line (None: not listed at all)."""
        return self.nodes().get("inference", {}).get(f"{self.lab.hosts[name].fqdn}:50051")

    # -- calls from the classroom --------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.lab.hosts['gw'].address}:7860"

    def call(self, function, *args):
        return self.client.submit(function, *args)

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=120,
            transport=ByName(self.lab.hosts["gw"].fqdn, verify=self.tls),
        )

    def complete(self, model: str = MODEL, max_tokens: int = 4) -> dict:
        with self.http() as client:
            response = client.post(
                "/v1/chat/completions", json={"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
            )
        assert response.status_code == 200, response.text
        return response.json()

    def stream(self, max_tokens: int) -> dict:
        """A streamed chat; whether text came, how it finished, the error it ended with."""
        result: dict = {"text": "", "finish": None, "error": None}
        body = {"model": MODEL, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.7, "stream": True}
        with self.http() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
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
                    if not result["text"] and choice["delta"].get("content"):
                        self.answers_started.release()
                    result["text"] += choice["delta"].get("content") or ""
                    result["finish"] = choice["finish_reason"] or result["finish"]
        return result

    def class_of(self, count: int, job=None) -> list:
        futures = [self.call(job or self.complete) for _ in range(count)]
        return [future.result(timeout=300) for future in futures]  # a hang fails here


def weaviate_binary() -> Path | None:
    path = cached_weaviate_binary()
    return path if path.is_file() and os.access(path, os.X_OK) else None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # killed: clean up as for Ctrl-C
    try:
        with Lab(folder) as lab:
            for name, number in (("gw", 2), ("inf1", 11), ("inf2", 12), ("emb", 13), ("asr", 14), ("ret", 15), ("odd", 16), ("client", 50)):
                lab.add_host(name, number)
            running = Fleet(lab, folder)
            yield from _started(running, folder)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if FIGURES:
            print("\nfleet figures:", json.dumps(FIGURES, indent=2))
            if os.environ.get("SCHULKI_FLEET_FIGURES"):
                Path(os.environ["SCHULKI_FLEET_FIGURES"]).write_text(json.dumps(FIGURES, indent=2))


def _started(running: Fleet, folder: Path):
    lab = running.lab
    store = {"SCHULKI_RETRIEVAL__STORE": "embedded"}
    binary = weaviate_binary()
    FIGURES["weaviate"] = "its own namespace" if binary else "not built here: retrieval used the embedded store"
    if binary:
        store = start_weaviate(lab, lab.add_host("wv", 20), binary, folder)
    running.start_inference("inf1", chat_model_path())
    running.start_inference("inf2", running.q5)
    running.start_node("emb", "embeddings", {**running.node_env("emb"), "SCHULKI_EMBEDDINGS__MODEL_PATH": str(embeddings_model_path())})
    running.start_node("asr", "transcription", {**running.node_env("asr"), "SCHULKI_TRANSCRIPTION__MODEL_PATH": str(speech_model_path())})
    emb_token = lab.write_private(folder / "tokens" / "retrieval-nodes.toml", f'"{lab.hosts["emb"].fqdn}" = "{lab.tokens["emb"]}"\n')
    retrieval_env = {
        **running.node_env("ret"),
        **store,
        "SCHULKI_RETRIEVAL__EMBEDDINGS_ADDRESS": f"{lab.hosts['emb'].fqdn}:50052",
        "SCHULKI_RUNTIME__NODE_TOKENS_FILE": str(emb_token),
    }
    running.start_node("ret", "retrieval", retrieval_env)
    running.start_gateway()
    wait_for(lambda: running.serving("inf1") and running.serving("inf2"), 60, "both inference nodes serving", interval=0.2)
    yield running
    running.client.shutdown(wait=False, cancel_futures=True)
    running.inside_gateway.shutdown(wait=False, cancel_futures=True)


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * 16000)
    return buffer.getvalue()


def test_every_service_answers_through_the_gateway_over_tls_with_each_nodes_own_token(fleet):
    wait_for(
        lambda: all(fleet.nodes().get(s) and all(fleet.nodes()[s].values()) for s in ("embeddings", "transcription", "retrieval")),
        60,
        "every service serving",
    )

    def use_every_service():
        with fleet.http() as client:
            models = [m["id"] for m in client.get("/v1/models").json()["data"]]
            embedded = client.post("/v1/embeddings", json={"input": ["Vulkane speien Lava."], "model": "schulki-embeddings"})
            heard = client.post(
                "/v1/audio/transcriptions", files={"file": ("stille.wav", _wav(), "audio/wav")}, data={"model": "whisper-1"}
            )
            text = "Die Photosynthese wandelt Sonnenlicht in Zucker um. Chlorophyll in den Blättern fängt das Licht."
            uploaded = client.post(
                "/v1/files", files={"file": ("photosynthese.txt", text.encode(), "text/plain")}, data={"purpose": "assistants"}
            )
            store = client.post("/v1/vector_stores", json={"name": "Bio", "file_ids": [uploaded.json()["id"]]}).json()
            hits: list = []
            deadline = time.monotonic() + 120
            while not hits and time.monotonic() < deadline:
                found = client.post(f"/v1/vector_stores/{store['id']}/search", json={"query": "Chlorophyll Blätter"})
                hits = found.json().get("data", []) if found.status_code == 200 else []
                time.sleep(0.5)
            return models, embedded, heard, hits

    models, embedded, heard, hits = fleet.call(use_every_service).result(timeout=300)
    assert models.count(MODEL) == 1 and not [m for m in models if m.startswith(MODEL + "-")], models  # one name for both quants
    assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) > 0, embedded.text
    assert heard.status_code == 200 and "text" in heard.json(), heard.text
    assert hits and hits[0]["filename"] == "photosynthese.txt", hits


def test_a_class_spreads_over_both_quants_of_the_model(fleet):
    before = {name: fleet.answered(name) for name in fleet.inference}
    answers = fleet.class_of(16)
    assert {answer["model"] for answer in answers} == {MODEL}
    served = {name: fleet.answered(name) - before[name] for name in fleet.inference}
    assert sum(served.values()) == 16 and min(served.values()) > 0, served
    FIGURES["share of 16 answers (inf1 Q4_K_M, inf2 Q5_K_M)"] = served


def test_a_node_killed_mid_class_loses_at_most_its_running_answers_and_comes_back(fleet):
    wait_for(lambda: all(fleet.running(n) == 0 for n in fleet.inference), 60, "no chat running")
    victim = "inf1"
    futures = [fleet.call(fleet.stream, 60) for _ in range(8)]
    # the victim writes answers in both its slots and has more waiting in its line: kill it once text flows
    wait_for(lambda: fleet.running(victim) > SLOTS, 120, "a full line on the victim")
    assert fleet.answers_started.acquire(timeout=120), "no answer started"
    running_on_victim = fleet.running(victim)
    stop(fleet.process[victim], grace=0)  # as a PC that loses power
    killed_at = time.monotonic()
    results = [future.result(timeout=300) for future in futures]  # a hang fails here
    lost = [r for r in results if r["finish"] is None]
    for r in lost:  # only an answer that had started on the killed node may end early, and it says so
        assert r["error"]["code"] == "answer_broke_off" and r["text"], r
    assert len(lost) <= SLOTS, results  # those it was writing; those waiting in its line went to the other node
    assert sum(1 for r in results if r["finish"] in ("stop", "length")) == 8 - len(lost)
    wait_for(lambda: fleet.serving(victim) is False, 30, "the gateway leaving the dead node out")
    FIGURES[f"answers lost when a node was killed (of 8; it had taken {running_on_victim})"] = len(lost)

    fleet.start_inference(victim, chat_model_path())
    back_at = time.monotonic()  # the node logged "serving on port"
    noticed = wait_for(lambda: fleet.serving(victim), 60, "the gateway noticing the node's return", interval=0.02)
    FIGURES[f"seconds until the return was noticed (health_interval_s {HEALTH_INTERVAL_S})"] = round(noticed, 2)
    assert back_at > killed_at
    before = fleet.answered(victim)
    fleet.class_of(8)
    assert fleet.answered(victim) > before  # takes work again, no gateway restart


def test_a_node_removed_from_the_settings_is_gone_without_a_restart(fleet):
    gateway = fleet.process["gw"]
    fleet.write_settings(["inf1"], fleet.gateway_tokens())
    gone = wait_for(lambda: fleet.serving("inf2") is None, 30, "inf2 gone from the gateway", interval=0.05)
    FIGURES["seconds until a node removed from the settings was gone"] = round(gone, 2)
    before = fleet.answered("inf2")
    fleet.class_of(6)
    assert fleet.answered("inf2") == before  # no work for it any more
    assert gateway.poll() is None  # the same gateway process
    fleet.write_settings(fleet.inference, fleet.gateway_tokens())
    wait_for(lambda: fleet.serving("inf2"), 30, "inf2 back in the gateway's line")


def test_a_node_with_a_token_the_gateway_does_not_hold_or_a_certificate_of_another_ca_gets_no_work(fleet):
    from schulki.certificates import ensure_ca, ensure_certificate

    lab = fleet.lab
    odd = lab.hosts["odd"]
    fleet.write_settings([*fleet.inference, "odd"], {**fleet.gateway_tokens(), "odd": "9" * 64})  # the gateway holds another token
    fleet.start_inference("odd", fleet.q5)
    wait_for(lambda: "wrong or missing service token" in fleet.log("odd").read_text(errors="replace"), 30, "the node refusing the gateway")
    assert fleet.serving("odd") is False
    before = fleet.answered("odd")
    fleet.class_of(6)
    assert fleet.answered("odd") == before
    stop(fleet.process["odd"], grace=0)

    # the right token, but a certificate from another CA (a machine set up with a CA of its own)
    other = lab.folder / "other-ca"
    ensure_ca(other, "another CA", permitted=[DOMAIN], passphrase="another-ca-passphrase")
    ensure_certificate(other, "odd", [odd.fqdn], other, ca_passphrase="another-ca-passphrase")
    fleet.write_settings([*fleet.inference, "odd"], fleet.gateway_tokens())
    fleet.start_inference("odd", fleet.q5, ca_folder=other)
    time.sleep(4 * HEALTH_INTERVAL_S)  # four health checks, each refused in the TLS handshake
    assert fleet.serving("odd") is False
    before = fleet.answered("odd")
    fleet.class_of(6)
    assert fleet.answered("odd") == before
    # nothing reached the node's services: the gateway refused the handshake before any call
    assert "refused" not in fleet.log("odd").read_text(errors="replace").split("serving on port")[-1]
