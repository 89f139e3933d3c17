"""Two gateway processes on one PostgreSQL serve the same school, as behind a load balancer with two addresses.

Each gateway is ``python -m schulki.gateway`` in a process of its own, with a
data folder of its own (nothing shared on disk), the same database URL, the
same secret key and the same certificate; the embeddings and retrieval
services run in this process. Whatever one gateway decides for a user, the
other must see at once: logins, throttling, keys, quotas, files, vector stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from schulki.gateway.accounts.database import Accounts, NewAccount

from tests.conftest import free_port, shared_tls
from tests.gateway_stack import build_service, stack_config
from tests.security.conftest import gradio_call
from tests.service_support import wait_until

POSTGRES_URL = os.environ.get("SCHULKI_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="no PostgreSQL server here: ./dev test starts one, or set SCHULKI_TEST_POSTGRES_URL to a server of your own",
)
STUDENT_REQUESTS_PER_MINUTE = 5
LOGIN_ATTEMPTS = 3


@dataclass
class GatewayProcess:
    """One ``python -m schulki.gateway``, its log in its data folder."""

    url: str
    process: subprocess.Popen
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _empty_database() -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:  # every table of every module, whatever made it
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def start_gateway(data_dir: Path, settings: dict[str, str]) -> GatewayProcess:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "gateway.log"
    env = {**os.environ, **settings, "SCHULKI_DATA_DIR": str(data_dir), "SCHULKI_GATEWAY__PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "schulki.gateway"], env=env, stdout=output, stderr=subprocess.STDOUT)
    running = GatewayProcess(f"https://127.0.0.1:{port}", process, log)

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(running.url + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=180, what="a gateway process serving", interval=0.5)
    return running


@dataclass
class School:
    a: GatewayProcess
    b: GatewayProcess
    accounts: Accounts
    settings: dict[str, str]
    a_folder: Path

    def add_user(self, name: str, role: str = "student") -> NewAccount:
        return self.accounts.add_user(name, role, [])


@pytest.fixture(scope="module")
def school(tmp_path_factory) -> Iterator[School]:
    from tests.conftest import InProcessServer

    _empty_database()
    folder = tmp_path_factory.mktemp("two-gateways")
    tls = shared_tls()
    config = stack_config(folder / "services")
    with InProcessServer([build_service("embeddings", config)]) as embeddings:
        config.retrieval.embeddings_address = embeddings.address
        config.retrieval.store_path = folder / "services" / "retrieval"
        with InProcessServer([build_service("retrieval", config)]) as retrieval:
            settings = {
                "SCHULKI_GATEWAY__DATABASE_URL": POSTGRES_URL,
                "SCHULKI_GATEWAY__HOST": "127.0.0.1",
                "SCHULKI_GATEWAY__SECRET_KEY": "one-school-two-gateways-0123456789abcdef",
                "SCHULKI_GATEWAY__TLS_CERT_FILE": str(tls.cert_file),
                "SCHULKI_GATEWAY__TLS_KEY_FILE": str(tls.key_file),
                "SCHULKI_GATEWAY__EMBEDDINGS_ADDRESSES": json.dumps([embeddings.address]),
                "SCHULKI_GATEWAY__RETRIEVAL_ADDRESSES": json.dumps([retrieval.address]),
                "SCHULKI_GATEWAY__INFERENCE_ADDRESSES": json.dumps([f"127.0.0.1:{free_port()}"]),  # nothing listens: down
                "SCHULKI_GATEWAY__TRANSCRIPTION_ADDRESSES": json.dumps([f"127.0.0.1:{free_port()}"]),
                "SCHULKI_GATEWAY__HEALTH_INTERVAL_S": "0.5",
                "SCHULKI_GATEWAY__LOGIN_ATTEMPTS": str(LOGIN_ATTEMPTS),
                "SCHULKI_GATEWAY__REQUESTS_PER_MINUTE": json.dumps(
                    {"student": STUDENT_REQUESTS_PER_MINUTE, "teacher": 1000, "admin": 1000}
                ),
            }
            # at the same moment, as two gateway hosts booting together: each creates the tables it misses, under one lock
            with ThreadPoolExecutor(2) as starting:
                starts = [starting.submit(start_gateway, folder / name, settings) for name in ("a", "b")]
                a, b = (start.result() for start in starts)
            try:
                yield School(a, b, Accounts(POSTGRES_URL), settings, folder / "a")
            finally:
                a.stop()
                b.stop()


def login(gateway: GatewayProcess, name: str, password: str) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/login", data={"name": name, "password": password})


def test_a_session_opened_on_one_gateway_works_on_the_other_and_ends_on_both(school):
    user = school.add_user("zwei-sina")
    opened = login(school.a, user.account.name, user.password)
    assert opened.status_code == 303
    cookie = {"schulki_session": opened.cookies["schulki_session"]}
    with school.b.client(cookies=cookie) as on_b, school.a.client(cookies=cookie) as on_a:
        assert on_b.get("/", follow_redirects=False).status_code == 200
        assert on_b.get("/logout", follow_redirects=False).status_code == 303
        assert on_a.get("/", follow_redirects=False).status_code == 303  # to the login page: the session is gone on A too


def test_a_login_throttled_on_one_gateway_is_throttled_on_the_other(school):
    victim = school.add_user("zwei-tom", "teacher")
    for attempt in range(LOGIN_ATTEMPTS):
        gateway = (school.a, school.b)[attempt % 2]
        assert login(gateway, victim.account.name, f"falsch-{attempt}").status_code == 401
    for gateway in (school.a, school.b):  # this address has used its tries for the name, on whichever gateway
        refused = login(gateway, victim.account.name, victim.password)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1, refused.text
    with httpx.Client(base_url=school.b.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=120) as elsewhere:
        assert elsewhere.post("/login", data={"name": victim.account.name, "password": victim.password}).status_code == 303


def test_a_key_revoked_on_one_gateway_is_refused_by_the_other_at_once(school):
    admin, student = school.add_user("zwei-admin", "admin"), school.add_user("zwei-lea")
    old_key = {"Authorization": f"Bearer {student.api_key}"}
    with school.b.client() as b:
        assert b.get("/v1/models", headers=old_key).status_code == 200
    opened = login(school.a, admin.account.name, admin.password)
    with school.a.client(cookies={"schulki_session": opened.cookies["schulki_session"]}) as admin_on_a:
        status, event, _ = gradio_call(admin_on_a, "admin_reset_password", [student.account.name])
    assert (status, event) == (200, "complete")
    with school.b.client() as b:
        refused = b.get("/v1/models", headers=old_key)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_requests_counted_on_one_gateway_count_on_the_other(school):
    student = school.add_user("zwei-mia")
    key = {"Authorization": f"Bearer {student.api_key}"}
    answers = []
    for request in range(STUDENT_REQUESTS_PER_MINUTE + 1):
        with (school.a, school.b)[request % 2].client() as client:
            answer = client.post("/v1/files", headers=key, files={"file": (f"n{request}.txt", b"Notiz")}, data={"purpose": "assistants"})
        answers.append(answer.status_code)
    assert answers == [200] * STUDENT_REQUESTS_PER_MINUTE + [429], answers


def test_a_file_uploaded_through_one_gateway_is_found_and_stored_through_the_other(school):
    teacher = school.add_user("zwei-jan", "teacher")
    other = school.add_user("zwei-ole", "teacher")
    key, others_key = {"Authorization": f"Bearer {teacher.api_key}"}, {"Authorization": f"Bearer {other.api_key}"}
    text = "Die Photosynthese wandelt Licht in chemische Energie um. Chlorophyll fängt das Licht ein."
    with school.b.client(headers=key) as b, school.a.client(headers=key) as a:
        uploaded = b.post("/v1/files", files={"file": ("photosynthese.txt", text.encode())}, data={"purpose": "assistants"})
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        assert a.get(f"/v1/files/{file_id}").json()["filename"] == "photosynthese.txt"
        assert [f["id"] for f in a.get("/v1/files").json()["data"]] == [file_id]
        assert a.get(f"/v1/files/{file_id}", headers=others_key).status_code == 404
        made = a.post("/v1/vector_stores", json={"name": "Biologie", "file_ids": [file_id]})  # A has never seen the bytes
        assert made.status_code == 200, made.text
        store = made.json()["id"]
        assert store in [s["id"] for s in b.get("/v1/vector_stores").json()["data"]]

        def ingested() -> bool:
            status = b.get(f"/v1/vector_stores/{store}/files/{file_id}").json()["status"]
            assert status in ("in_progress", "completed"), status
            return status == "completed"

        wait_until(ingested, timeout=120, what="the file ingested", interval=0.5)
        found = b.post(f"/v1/vector_stores/{store}/search", json={"query": "Was fängt das Licht ein?"})
        assert found.status_code == 200 and "Chlorophyll" in json.dumps(found.json()), found.text
        assert b.delete(f"/v1/files/{file_id}").json()["deleted"] is True
        assert a.get(f"/v1/files/{file_id}").status_code == 404


def test_a_second_gateway_process_on_the_same_machine_serves_the_files_the_first_handed_out(school):
    """Two processes on one machine and one data folder (an upgrade without downtime) share Gradio's cache: a file the
    new process handed to its owner is downloaded through the old one, and only by its owner."""
    admin, student = school.add_user("zwei-root", "admin"), school.add_user("zwei-kim")
    beside_a = start_gateway(school.a_folder, school.settings)
    try:
        opened = login(beside_a, admin.account.name, admin.password)
        with beside_a.client(cookies={"schulki_session": opened.cookies["schulki_session"]}) as on_new:
            status, event, data = gradio_call(on_new, "admin_export_user", [student.account.name])
        assert (status, event) == (200, "complete"), data
        path = data[1]["value"]["path"]
        for user, expected in ((admin, 200), (student, 404)):  # while both run (Gradio deletes its files when it stops)
            opened = login(school.a, user.account.name, user.password)
            with school.a.client(cookies={"schulki_session": opened.cookies["schulki_session"]}) as on_old:
                assert on_old.get(f"/gradio_api/file={path}").status_code == expected, user.account.name
    finally:
        beside_a.stop()


def test_the_web_page_needs_sticky_sessions_an_event_started_on_one_gateway_is_unknown_to_the_other(school):
    """What the README says of load balancers: Gradio keeps a page's events in the process that started them."""
    admin = school.add_user("zwei-chef", "admin")
    cookie = {"schulki_session": login(school.a, admin.account.name, admin.password).cookies["schulki_session"]}
    with school.a.client(cookies=cookie) as a, school.b.client(cookies=cookie) as b:
        event_id = a.post("/gradio_api/call/admin_overview", json={"data": []}).json()["event_id"]
        assert b.get(f"/gradio_api/call/admin_overview/{event_id}").status_code == 404
        with a.stream("GET", f"/gradio_api/call/admin_overview/{event_id}") as on_a:
            assert on_a.status_code == 200 and any(line.startswith("event: complete") for line in on_a.iter_lines())
