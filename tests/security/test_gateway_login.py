"""Attacks on logging in and on sessions: password bursts, locking others out, reusing a session, a class behind one address.

Different client addresses are real: Linux answers on all of 127.0.0.0/8, so
each "PC" of the lab connects from its own loopback address.
"""

from __future__ import annotations

import concurrent.futures
import threading
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
        if name.startswith("login_") or name in ("trusted_proxies", "nat_addresses", "sessions_per_user"):
            setattr(config, name, value)
    found = security_stack.gateway.login_limiter
    found.clear() if hasattr(found, "clear") else found.failures._events.clear()


def configure(stack, **settings) -> None:
    """Gateway settings for one test; a setting this gateway does not have yet is left out (the attack then shows it succeeds)."""
    for name, value in settings.items():
        if name in type(stack.config.gateway).model_fields:
            setattr(stack.config.gateway, name, value)


def login(stack, name: str, password: str, address: str, headers: dict | None = None) -> httpx.Response:
    with httpx.Client(base_url=stack.url, transport=httpx.HTTPTransport(local_address=address), timeout=120) as client:
        return client.post("/login", data={"name": name, "password": password}, headers=headers)


def pc(stack, address: str) -> httpx.Client:
    """A lab PC at ``address`` that keeps its connection open, as a browser does."""
    return httpx.Client(base_url=stack.url, transport=httpx.HTTPTransport(local_address=address), timeout=120)


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


def all_at_once(stack, address: str, users: list) -> list[int]:
    """Each user logs in from a browser at ``address`` whose connection is open already, all at the same moment."""
    clients = [pc(stack, address) for _ in users]
    try:
        for client in clients:
            assert client.get("/login").status_code == 200  # as browsers showing the login page
        together = threading.Barrier(len(users))

        def log_in(index: int) -> int:
            together.wait()
            return clients[index].post("/login", data={"name": users[index].name, "password": users[index].password}).status_code

        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            return list(pool.map(log_in, range(len(users))))
    finally:
        for client in clients:
            client.close()


class Pollers:
    """Threads that log in from their own addresses in a loop until stopped, and note every answer."""

    def __init__(self, stack, addresses: list[str], name: str, password):
        self.stack, self.name, self.password = stack, name, password
        self.answers: dict[str, list[httpx.Response]] = {address: [] for address in addresses}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._poll, args=(address,), daemon=True) for address in addresses]

    def _poll(self, address: str) -> None:
        with pc(self.stack, address) as client:
            for attempt in range(2000):  # a bound, should stop never come
                if self.stop.is_set():
                    break
                password = self.password(attempt) if callable(self.password) else self.password
                self.answers[address].append(client.post("/login", data={"name": self.name, "password": password}))
                client.cookies.clear()
                self.stop.wait(0.02)

    def statuses(self) -> list[int]:
        return [answer.status_code for answers in list(self.answers.values()) for answer in list(answers)]

    def __enter__(self) -> Pollers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


def test_pollers_for_a_teachers_name_do_not_take_her_logins(security_stack, limiter):
    """Attacks (issue 19, 2): eight PCs poll wrong passwords for a teacher's name, so that she never gets a try (0 of 20 before)."""
    configure(security_stack, login_attempts_per_account=6, login_backoff_s=120.0)
    teacher = make_user(security_stack, "teacher")
    attackers = [f"127.0.3.{n}" for n in range(1, 9)]
    for address in attackers:  # the name is now under attack: 8 failures from 8 addresses
        assert login(security_stack, teacher.name, "falsch-0", address).status_code in (401, 429)
    with Pollers(security_stack, attackers, teacher.name, lambda attempt: f"falsch-{attempt + 1}") as pollers:
        answers = [login(security_stack, teacher.name, teacher.password, "127.0.3.100").status_code for _ in range(5)]
    assert answers == [303] * 5, answers  # the teacher's own PC has not failed for her name: no poller can take its tries
    assert 303 not in pollers.statuses() and 429 in pollers.statuses()


def test_logging_in_as_oneself_in_a_loop_neither_starves_the_teacher_nor_piles_up_sessions(security_stack, limiter):
    """Attacks (issue 19, 3): four PCs log in as one student in a loop to keep every password check busy (the teacher
    got 26 × 429 before) and to open hundreds of sessions."""
    configure(security_stack, login_successes_per_account=5, sessions_per_user=3)
    student, teacher = make_user(security_stack, "student"), make_user(security_stack, "teacher")
    with Pollers(security_stack, [f"127.0.4.{n}" for n in range(1, 5)], student.name, student.password) as pollers:
        # the teacher comes once every looping PC has been refused once (the fix), or after 40 logins of the loop (before it)
        while not all(429 in [a.status_code for a in answers] for answers in pollers.answers.values()) and len(pollers.statuses()) < 40:
            time.sleep(0.05)
        answers = [login(security_stack, teacher.name, teacher.password, "127.0.4.100").status_code for _ in range(5)]
    assert answers == [303] * 5, answers
    opened = [answer.cookies["schulki_session"] for answers in pollers.answers.values() for answer in answers if answer.status_code == 303]
    in_flight = security_stack.config.gateway.login_concurrency - 1  # checks that started before the fifth success counted
    assert len(opened) <= 5 + in_flight, f"{len(opened)} logins in one window"
    alive = 0
    for cookie in opened:
        with httpx.Client(base_url=security_stack.url, cookies={"schulki_session": cookie}) as browser:
            alive += browser.get("/", follow_redirects=False).status_code == 200
    assert alive <= 3, f"{alive} sessions open"
    assert security_stack.gateway.accounts.export_data(student.account.id)["account"]["open_sessions"] <= 3


def test_a_class_behind_one_nat_address_logs_in_at_once_and_survives_typos(security_stack, limiter):
    """Attacks (issue 19, 14): a class behind the school's NAT: three logins at once got 429, and 20 typos blocked everyone behind it."""
    nat, lab_pc = "127.0.5.1", "127.0.5.2"
    configure(security_stack, nat_addresses=[nat])
    students = [make_user(security_stack, "student") for _ in range(6)]
    assert all_at_once(security_stack, nat, students[:3]) == [303] * 3
    for typo in range(20):  # four typos each from five students: below the limit per name and address
        assert login(security_stack, students[typo % 5].name, f"falsch-{typo}", nat).status_code == 401
    assert login(security_stack, students[5].name, students[5].password, nat).status_code == 303
    assert login(security_stack, students[0].name, students[0].password, nat).status_code == 303
    for typo in range(20):  # a lab PC that is not the NAT keeps the limit per address
        login(security_stack, students[typo % 5].name, f"falsch-{typo}", lab_pc)
    assert login(security_stack, students[5].name, students[5].password, lab_pc).status_code == 429


def test_a_whole_class_behind_the_nat_logs_in_at_once(security_stack, limiter):
    """Attacks (issue 19, 14), at a class's size: twelve students behind the NAT press "Anmelden" at once; beyond the
    password checks running at once, logins were refused with 429 instead of waiting their turn."""
    nat = "127.0.5.21"
    configure(security_stack, nat_addresses=[nat], login_wait_s=60.0)
    students = [make_user(security_stack, "student") for _ in range(12)]
    assert all_at_once(security_stack, nat, students) == [303] * len(students)
    # a lab PC's own burst still waits in no line: one login runs, one waits, the rest are refused at once
    burst = all_at_once(security_stack, "127.0.5.22", students[:6])
    assert burst.count(429) >= 1 and set(burst) <= {303, 429}, burst


def test_students_guessing_behind_the_nat_do_not_lock_out_the_teacher_behind_it(security_stack, limiter):
    """Attacks (issue 19, 2 and 14): students behind the school's one NAT address guess their teacher's password there,
    which blocked her name at that address, so she could not log in from her classroom."""
    nat = "127.0.5.11"
    configure(security_stack, nat_addresses=[nat], login_attempts_per_account=3)
    teacher, student = make_user(security_stack, "teacher"), make_user(security_stack, "student")
    with pc(security_stack, nat) as her_pc, pc(security_stack, nat) as student_pc:  # she logged in from her PC before
        assert her_pc.post("/login", data={"name": teacher.name, "password": teacher.password}).status_code == 303
        assert student_pc.post("/login", data={"name": student.name, "password": student.password}).status_code == 303
        device, students_device = her_pc.cookies.get("schulki_device"), student_pc.cookies.get("schulki_device")
    attempts = security_stack.config.gateway.login_attempts
    guesses = [login(security_stack, teacher.name, f"falsch-{n}", nat).status_code for n in range(attempts + 1)]
    assert guesses[:3] == [401] * 3 and guesses[-1] == 429, guesses  # the name is under attack, the address slowed, then blocked
    with pc(security_stack, nat) as somewhere_else:  # a browser that has not logged in as her: the name waits at this address
        assert somewhere_else.post("/login", data={"name": teacher.name, "password": teacher.password}).status_code == 429
    for cookie, expected in ((students_device, 429), ("forged.0123456789abcdef0123456789abcdef", 429), (device, 303)):
        with pc(security_stack, nat) as browser:
            browser.cookies.set("schulki_device", cookie or "", domain="127.0.0.1", path="/login")
            assert browser.post("/login", data={"name": teacher.name, "password": teacher.password}).status_code == expected


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(security_stack, limiter):
    """Attacks (issue 19): a student sends X-Forwarded-For with a new address for each guess, to dodge the limit per name and address."""
    proxy = "127.0.6.1"
    configure(security_stack, trusted_proxies=[proxy])
    victim = make_user(security_stack, "teacher")
    attempts = security_stack.config.gateway.login_attempts
    spoofed = [
        login(security_stack, victim.name, f"falsch-{n}", "127.0.0.1", {"X-Forwarded-For": f"10.9.0.{n}"}).status_code
        for n in range(attempts + 1)
    ]
    assert spoofed == [401] * attempts + [429], spoofed  # the header of a PC that is no proxy is ignored
    behind = {"X-Forwarded-For": "10.9.1.1"}
    for n in range(attempts):
        assert login(security_stack, victim.name, f"falsch-{n}", proxy, behind).status_code == 401
    assert login(security_stack, victim.name, victim.password, proxy, behind).status_code == 429
    # what a client wrote into the header before the proxy appended its address is not believed
    assert login(security_stack, victim.name, victim.password, proxy, {"X-Forwarded-For": "10.9.1.7, 10.9.1.1"}).status_code == 429
    # another PC behind the same proxy is not blocked
    assert login(security_stack, victim.name, victim.password, proxy, {"X-Forwarded-For": "10.9.1.2"}).status_code == 303


def test_the_client_address_is_read_from_the_right_up_to_the_first_untrusted_hop():
    from schulki.gateway.web.addresses import forwarded_client, in_networks

    proxies = ["10.0.0.2", "10.1.0.0/16"]
    assert forwarded_client("10.0.0.2", ["1.2.3.4, 10.9.9.9"], proxies) == "10.9.9.9"
    assert forwarded_client("10.0.0.2", ["1.2.3.4", "10.9.9.9, 10.1.4.4"], proxies) == "10.9.9.9"  # two proxies, two headers
    assert forwarded_client("10.0.0.3", ["10.9.9.9"], proxies) == "10.0.0.3"  # not a proxy
    assert forwarded_client("10.0.0.2", ["10.9.9.9, nonsense"], proxies) == "10.0.0.2"
    assert forwarded_client("10.0.0.2", ["[2001:db8::7]:4711"], proxies) == "2001:db8::7"
    assert forwarded_client("10.0.0.2", [], proxies) == "10.0.0.2"
    assert in_networks("::ffff:10.1.2.3", proxies) and not in_networks("10.2.0.1", proxies) and not in_networks("unknown", proxies)
