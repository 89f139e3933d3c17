"""Attacks on logging in and on sessions: password bursts, locking others out, reusing a session (finding 4 of issue 9).

Different client addresses are real: Linux answers on all of 127.0.0.0/8, so
each "PC" of the lab connects from its own loopback address.
"""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from tests.security.conftest import make_user


@pytest.fixture()
def limiter(security_stack):
    """The login limiter with the suite's settings restored and its counts cleared afterwards (tests change them)."""
    config = security_stack.config.gateway
    saved = config.model_dump()
    yield security_stack.gateway.login_limiter
    for name, value in saved.items():
        if name.startswith("login_"):
            setattr(config, name, value)
    security_stack.gateway.login_limiter.failures._events.clear()


def login(stack, name: str, password: str, address: str) -> httpx.Response:
    with httpx.Client(base_url=stack.url, transport=httpx.HTTPTransport(local_address=address), timeout=120) as client:
        return client.post("/login", data={"name": name, "password": password})


def test_a_burst_of_wrong_logins_from_one_address_is_not_all_checked(security_stack, limiter):
    """Attacks: 40 concurrent wrong logins from one address (each an argon2 check of 64 MiB) against a limit of 5."""
    victim = make_user(security_stack, "teacher")
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda i: login(security_stack, victim.name, f"falsch-{i:04d}", "127.0.0.21").status_code, range(40)))
    checked = answers.count(401)
    assert checked <= security_stack.config.gateway.login_attempts, answers
    assert answers.count(429) == 40 - checked, answers
    assert login(security_stack, victim.name, victim.password, "127.0.0.22").status_code == 303  # and the teacher is not locked out


def test_wrong_passwords_from_one_pc_do_not_lock_the_teacher_out_elsewhere(security_stack, limiter):
    """Attacks: five wrong passwords for a teacher's name from one address, which locked the teacher out from every address."""
    teacher = make_user(security_stack, "teacher")
    for attempt in range(security_stack.config.gateway.login_attempts):
        assert login(security_stack, teacher.name, f"falsch-{attempt}", "127.0.0.31").status_code == 401
    assert login(security_stack, teacher.name, teacher.password, "127.0.0.31").status_code == 429  # the guessing PC waits
    assert login(security_stack, teacher.name, teacher.password, "127.0.0.32").status_code == 303  # the teacher's PC does not


def test_an_attack_from_many_addresses_slows_tries_down_but_never_locks_the_account(security_stack, limiter):
    """Attacks: wrong passwords for one name from many addresses, repeated, to lock the account for good."""
    config = security_stack.config.gateway
    config.login_attempts_per_account, config.login_backoff_s = 6, 2.0  # (an older gateway, without them, locks the name)
    teacher = make_user(security_stack, "teacher")
    for attempt in range(8):
        login(security_stack, teacher.name, f"falsch-{attempt}", f"127.0.1.{attempt + 1}")
    slowed = login(security_stack, teacher.name, teacher.password, "127.0.2.1")
    assert slowed.status_code in (303, 429)
    if slowed.status_code == 429:
        assert 1 <= int(slowed.headers["Retry-After"]) <= config.login_backoff_s + 1
        time.sleep(int(slowed.headers["Retry-After"]))
        assert login(security_stack, teacher.name, teacher.password, "127.0.2.1").status_code == 303


def test_a_session_is_dead_after_logout(security_stack, student):
    """Attacks: reusing a session cookie after its owner logged out (a shared lab PC)."""
    with student.browser() as client:
        cookie = client.cookies.get("schulki_session")
        assert client.get("/logout", follow_redirects=False).status_code == 303
    with httpx.Client(base_url=security_stack.url, cookies={"schulki_session": cookie}) as reuse:
        assert reuse.get("/", follow_redirects=False).status_code == 303
        assert reuse.get("/config").status_code == 401
        assert reuse.post("/gradio_api/call/documents_workspaces", json={"data": []}).status_code == 401


def test_a_session_and_api_key_are_dead_after_the_account_is_deleted(security_stack, admin):
    """Attacks: reusing a deleted student's session cookie and API key."""
    leaving = make_user(security_stack, "student")
    browser = leaving.browser()
    cookie = browser.cookies.get("schulki_session")
    browser.close()
    with admin.browser() as client:
        from tests.security.conftest import gradio_call

        status, event, _ = gradio_call(client, "admin_delete_user", [leaving.name])
        assert status == 200 and event == "complete"
    with httpx.Client(base_url=security_stack.url, cookies={"schulki_session": cookie}) as reuse:
        assert reuse.get("/", follow_redirects=False).status_code == 303
        assert reuse.get("/config").status_code == 401
    response = httpx.get(security_stack.url + "/v1/models", headers=leaving.bearer)
    assert response.status_code == 401
    assert httpx.get(security_stack.url + "/config", headers=leaving.bearer).status_code == 401
