"""Accounts, roles, login and the `schulki user` commands, against a real database and a real gateway (no services running)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from schulki.config import GatewayConfig
from schulki.gateway.accounts import database
from schulki.gateway.accounts.database import AccountError, Accounts, class_workspace
from schulki.gateway.accounts.quotas import QuotaExceeded, Quotas

from tests.gateway_stack import running_stack

POSTGRES_URL = os.environ.get("SCHULKI_TEST_POSTGRES_URL")  # e.g. postgresql+psycopg://schulki:secret@db/schulki_test


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES_URL,
                reason="no PostgreSQL server here: set SCHULKI_TEST_POSTGRES_URL (and pip install psycopg) to run the account tests against one",
            ),
        ),
    ]
)
def accounts(request, tmp_path) -> Accounts:
    if request.param == "sqlite":
        return Accounts(f"sqlite:///{tmp_path / 'accounts.sqlite3'}")
    from schulki.gateway.accounts.database import Base

    found = Accounts(POSTGRES_URL)
    Base.metadata.drop_all(found.engine)  # a clean database for every test
    Base.metadata.create_all(found.engine)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("gateway"), services=()) as running:
        running.config.gateway.login_attempts = 3
        yield running


def test_passwords_and_keys_are_stored_only_as_hashes(tmp_path):
    accounts = Accounts(f"sqlite:///{tmp_path / 'accounts.sqlite3'}")
    created = accounts.add_user("anna", "student", ["7a"])
    assert accounts.check_password("anna", created.password).name == "anna"
    assert accounts.check_password("anna", created.password + "x") is None
    assert accounts.check_password("niemand", created.password) is None
    assert accounts.by_api_key(created.api_key).name == "anna"
    assert accounts.by_api_key(created.api_key[:-1] + "A" if created.api_key[-1] != "A" else created.api_key[:-1] + "B") is None
    dump = "\n".join(sqlite3.connect(tmp_path / "accounts.sqlite3").iterdump())
    assert created.password not in dump and created.api_key not in dump
    assert "$argon2id$" in dump  # memory-hard hash
    assert sqlite3.connect(tmp_path / "accounts.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_names_roles_and_duplicates_are_refused(accounts):
    accounts.add_user("ben", "teacher")
    for name, role, classes in (("ben", "student", []), ("a b", "student", []), ("carl", "king", []), ("dora", "student", ["7 a"])):
        with pytest.raises(AccountError):
            accounts.add_user(name, role, classes)


def test_students_see_their_own_and_their_classes_workspaces_only_teachers_may_change_class_ones(accounts):
    anna = accounts.add_user("anna", "student", ["7a"]).account
    ben = accounts.add_user("ben", "student", ["7b"]).account
    teacher = accounts.add_user("frau-meier", "teacher", ["7a"]).account
    assert [w.name for w in accounts.workspaces(anna)] == [anna.own_workspace, class_workspace("7a")]
    assert accounts.workspace_for(anna, ben.own_workspace) is None
    assert accounts.workspace_for(anna, class_workspace("7b")) is None
    assert accounts.workspace_for(anna, class_workspace("7a")) is not None
    assert accounts.workspace_for(anna, class_workspace("7a"), write=True) is None
    assert accounts.workspace_for(teacher, class_workspace("7a"), write=True) is not None
    assert accounts.workspace_for(teacher, anna.own_workspace) is None


def test_a_class_list_is_imported_all_or_nothing(accounts):
    created = accounts.import_csv("name,role,class,password\nmax,,7a,\nmia,teacher,7a 7b,geheim12345\n")
    assert [(c.account.name, c.account.role, c.account.classes) for c in created] == [
        ("max", "student", ("7a",)),
        ("mia", "teacher", ("7a", "7b")),
    ]
    assert accounts.check_password("mia", "geheim12345") is not None
    with pytest.raises(AccountError, match="gibt es schon"):
        accounts.import_csv("name\nneu\nmax\n")
    assert accounts.by_name("neu") is None
    with pytest.raises(AccountError, match="Spalten"):
        accounts.import_csv("vorname,nachname\na,b\n")


def test_deleting_a_user_removes_their_chats_and_usage(accounts):
    anna = accounts.add_user("anna", "student", ["7a"]).account
    accounts.save_chat(anna.id, None, [{"role": "user", "content": "Hallo"}])
    accounts.count_usage(anna.id, requests=1, tokens=10)
    assert accounts.usage_by_class() == [("7a", 1, 1, 10)]
    accounts.delete_user(anna.id)
    assert accounts.get(anna.id) is None and accounts.list_chats(anna.id) == [] and accounts.usage_by_class() == []
    assert accounts.add_user("anna2", "student").account.id != anna.id  # ids are never reused: workspaces are named after them


def test_chats_past_the_retention_period_are_deleted(accounts):
    anna = accounts.add_user("anna", "student").account
    chat = accounts.save_chat(anna.id, None, [{"role": "user", "content": "Hallo"}])
    assert accounts.purge_chats(30) == 0
    assert accounts.load_chat(anna.id, chat)[0]["content"] == "Hallo"
    assert accounts.purge_chats(0) == 1
    assert accounts.list_chats(anna.id) == []


def test_beyond_the_cap_a_new_login_closes_the_oldest_sessions(accounts):
    anna = accounts.add_user("anna", "student").account
    ben = accounts.add_user("ben", "student").account
    other = accounts.open_session(ben.id, 1.0, keep=1)
    tokens = [accounts.open_session(anna.id, hours, keep=3) for hours in (1.0, 2.0, 3.0)]  # expiring first = oldest
    assert all(accounts.session_user(token) for token in tokens)
    newest = accounts.open_session(anna.id, 4.0, keep=3)
    assert [accounts.session_user(token) is not None for token in [*tokens, newest]] == [False, True, True, True]
    assert accounts.session_user(accounts.open_session(anna.id, 0.5, keep=1)) is not None  # the new one stays, whatever its expiry
    assert all(accounts.session_user(token) is None for token in [*tokens, newest])
    assert accounts.session_user(other) is not None  # another user's sessions are not counted


def test_an_answer_is_admitted_and_reserved_in_one_transaction_that_parallel_answers_cannot_overrun(accounts):
    config = GatewayConfig(requests_per_minute={"student": 100}, tokens_per_day={"student": 1000})
    gateways = [Quotas(config, accounts)]
    if accounts.engine.dialect.name == "postgresql":  # a second gateway on the same database: its own engine and locks
        gateways.append(Quotas(config, Accounts(POSTGRES_URL)))
    gateways[0].requests.clear_all()  # user numbers start again in a fresh database; their windows must too
    anna, ben, carl = (
        accounts.add_user(name, "student", [group]).account for name, group in (("anna", "7a"), ("ben", "7b"), ("carl", "7c"))
    )

    def answer(number: int, account, prompt: int, longest: int) -> int | str:
        try:
            return gateways[number % len(gateways)].reserve(account, prompt, longest).reserved
        except QuotaExceeded as refused:
            return refused.message.split(":")[0].split(" von ")[0]

    with ThreadPoolExecutor(8) as pool:  # eight answers at once, each 100 prompt tokens and up to 200 answer tokens
        outcomes = list(pool.map(lambda number: answer(number, anna, 100, 200), range(8)))
    assert sorted(outcomes, key=str) == [300, 300, 300] + ["Dein Tageskontingent"] * 5, outcomes  # 900 of 1000: no prompt fits
    config.requests_per_minute["student"] = 3
    outcomes = [answer(number, ben, 10, 10) for number in range(4)]
    assert outcomes == [20, 20, 20, "Zu viele Anfragen"], outcomes
    accounts.count_usage(carl.id, tokens=1000)
    assert answer(0, carl, 10, 10) == "Dein Tageskontingent"
    # every request admitted is counted once, a refused one not at all; the refused ones left no event in the rate window
    assert accounts.usage_by_class() == [("7a", 1, 8, 900), ("7b", 1, 3, 60), ("7c", 1, 0, 1000)]
    assert [gateways[0].requests.count(str(user.id)) for user in (anna, ben, carl)] == [8, 3, 0]


def test_a_setting_changed_here_is_read_at_once_and_one_changed_by_another_gateway_within_two_seconds(accounts, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(database.time, "monotonic", lambda: clock[0])
    other = Accounts(accounts.engine.url.render_as_string(hide_password=False))  # another gateway on the same database
    assert accounts.recent_setting("class_model_7a", "none") == "none"
    other.set_setting("class_model_7a", "demo-b")
    clock[0] += database.SETTINGS_MAX_AGE_S - 0.1
    assert accounts.recent_setting("class_model_7a", "none") == "none"  # read for each chat: from the copy, no query
    clock[0] += 0.2
    assert accounts.recent_setting("class_model_7a", "none") == "demo-b"
    accounts.set_setting("class_model_7a", "demo-a")
    assert accounts.recent_setting("class_model_7a", "none") == "demo-a"  # this gateway's own change: at once


def test_the_cli_adds_a_user_and_imports_a_class(tmp_path):
    env = {**os.environ, "SCHULKI_DATA_DIR": str(tmp_path)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "schulki.cli", "user", *args], env=env, capture_output=True, text=True, timeout=60)

    added = run("add", "lehrer", "--role", "teacher", "--workspace", "7a")
    assert added.returncode == 0, added.stderr
    password = re.search(r"Passwort \(password\): (\S+)", added.stdout).group(1)
    key = re.search(r"API-Key: (sk-schulki-\S+)", added.stdout).group(1)
    accounts = Accounts(f"sqlite:///{tmp_path / 'gateway' / 'accounts.sqlite3'}")
    assert accounts.check_password("lehrer", password).classes == ("7a",)
    assert accounts.by_api_key(key).role == "teacher"
    (tmp_path / "klasse.csv").write_text("name,class\nmax,7a\nmia,7a\n")
    imported = run("import", str(tmp_path / "klasse.csv"))
    assert imported.returncode == 0, imported.stderr
    lines = imported.stdout.strip().splitlines()
    assert lines[0] == "name,role,class,password,api_key" and len(lines) == 3
    again = run("import", str(tmp_path / "klasse.csv"))
    assert again.returncode == 2 and "gibt es schon" in again.stderr
    assert run("add", "x y").returncode == 2


def test_visitors_are_sent_to_the_german_login_page(stack):
    response = httpx.get(stack.url + "/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    page = httpx.get(stack.url + "/login")
    assert page.status_code == 200 and "Benutzername" in page.text and 'lang="de"' in page.text
    assert "Password" in httpx.get(stack.url + "/login?lang=en").text
    assert httpx.get(stack.url + "/gradio_api/info").status_code == 401  # Gradio's routes refuse visitors too
    assert httpx.get(stack.url + "/en/config").status_code == 401


def test_login_sets_a_session_and_logout_ends_it(stack):
    created = stack.add_user("login-anna", "student")
    with httpx.Client(base_url=stack.url) as browser:
        response = browser.post("/login", data={"name": "login-anna", "password": created.password})
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert "httponly" in response.headers["set-cookie"].lower()
        assert browser.get("/").status_code == 200
        assert browser.get("/logout").status_code == 303
        assert browser.get("/", follow_redirects=False).status_code == 303


def test_failed_logins_are_rate_limited_per_account_and_address(stack):
    created = stack.add_user("login-ben", "student")
    for _ in range(stack.config.gateway.login_attempts):
        wrong = httpx.post(stack.url + "/login", data={"name": "login-ben", "password": "falsch-falsch"})
        assert wrong.status_code == 401 and "falsch" in wrong.text
    blocked = httpx.post(stack.url + "/login", data={"name": "login-ben", "password": created.password})
    assert blocked.status_code == 429 and "Zu viele Fehlversuche" in blocked.text and int(blocked.headers["Retry-After"]) >= 1
    # other names from the same address, and the same name from another address, are not blocked
    other = stack.add_user("login-carla", "student")
    assert httpx.post(stack.url + "/login", data={"name": "login-carla", "password": other.password}).status_code == 303
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as elsewhere:
        assert elsewhere.post(stack.url + "/login", data={"name": "login-ben", "password": created.password}).status_code == 303
    stack.gateway.login_limiter.clear()


def test_the_api_refuses_a_wrong_key_in_openais_error_shape(stack):
    response = httpx.get(stack.url + "/v1/models", headers={"Authorization": "Bearer sk-schulki-wrong"})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(stack.url + "/v1/models").status_code == 401


def test_a_service_that_is_down_gives_503_and_the_gateway_keeps_serving(stack):
    created = stack.add_user("down-dora", "student")
    headers = {"Authorization": f"Bearer {created.api_key}"}
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "schulki-chat", "messages": [{"role": "user", "content": "Hallo"}]},
    )
    assert response.status_code == 503 and response.json()["error"]["type"] == "service_unavailable"
    assert httpx.get(stack.url + "/healthz").json()["services"] == {
        name: False for name in ("inference", "embeddings", "transcription", "retrieval")
    }
    assert httpx.get(stack.url + "/v1/models", headers=headers).status_code == 200


def test_schulki_up_makes_the_first_admin_once(tmp_path):
    from schulki.config import Config
    from schulki.gateway.launch import first_admin_lines

    config = Config(data_dir=tmp_path)
    first = "\n".join(first_admin_lines(config))
    password = re.search(r"Passwort \(password\): (\S+)", first).group(1)
    accounts = Accounts(f"sqlite:///{tmp_path / 'gateway' / 'accounts.sqlite3'}")
    assert accounts.check_password("admin", password).role == "admin"
    again = "\n".join(first_admin_lines(config))
    assert "Passwort" not in again and "schulki user add" in again
    assert [a.name for a in accounts.list_users()] == ["admin"]


def test_schulki_up_shows_students_an_address_of_this_machine_not_a_wildcard():
    import ipaddress
    from urllib.parse import urlsplit

    from schulki.config import Config
    from schulki.gateway.launch import lan_url

    config = Config()
    config.gateway.host = "0.0.0.0"
    shown = urlsplit(lan_url(config))
    assert shown.port == config.gateway.port
    assert shown.hostname not in ("0.0.0.0", "::")
    try:
        assert not ipaddress.ip_address(shown.hostname).is_unspecified
    except ValueError:
        assert shown.hostname  # a host name when no address could be found
    config.gateway.host = "10.1.2.3"
    assert lan_url(config) == "https://10.1.2.3:7860"  # HTTPS unless it is turned off
    config.gateway.https = False
    assert lan_url(config) == "http://10.1.2.3:7860"
