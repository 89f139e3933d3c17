"""Web pages in the Dokumente tab, driven by gradio_client against the real services and a real web server on this machine.

A student adds a page by its address and asks about it; the answer's sources
name the address. Addresses in the school's network or on the machine itself
are refused unless the admin allowed the host (here only 127.0.0.1 on the
test site's port is, in this test's settings: the default allows none), as are pages too large, not
web pages, or not reachable; each with a German message, nothing stored, and
the tab keeps working. The workspace rules and the storage quota hold as for
uploads.
"""

from __future__ import annotations

import socket
from unittest import mock

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from schulki.retrieval.parsing import fetch_url
from schulki.runtime.errors import PermissionDenied, TooLarge

from tests.conftest import free_port
from tests.gateway_stack import running_stack, stack_config
from tests.web_page_support import FACT_QUESTION, web_site

MAX_PAGE_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def site():
    with web_site() as base:
        yield base


@pytest.fixture(scope="module")
def stack(tmp_path_factory, site):
    folder = tmp_path_factory.mktemp("gateway")
    config = stack_config(folder)
    config.retrieval.allowed_url_hosts = [
        site.removeprefix("http://")
    ]  # the test's web server (127.0.0.1:PORT) stands for the school's intranet wiki
    config.retrieval.max_upload_bytes = MAX_PAGE_BYTES
    config.retrieval.url_timeout_s = 5.0
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


def client_for(stack, name: str, role: str = "student", classes: tuple[str, ...] = ()):
    created = stack.add_user(name, role, classes)
    return created.account, Client(stack.url, headers={"Authorization": f"Bearer {created.api_key}"}, verbose=False)


@pytest.fixture(scope="module")
def lena(stack):
    return client_for(stack, "web-lena", classes=("8a",))


def documents(client, workspace: str) -> list:
    return client.predict(workspace, api_name="/documents_list")[0]["data"]


def test_a_student_adds_a_web_page_and_the_answer_names_its_address(lena, site):
    account, client = lena
    url = f"{site}/erdkunde/quetzalberg"
    message, table, _choices, cleared = client.predict(account.own_workspace, url, api_name="/documents_add_url")
    assert "Webseite" in message and url in message and "gespeichert" in message
    assert cleared == ""  # the field is empty for the next address
    assert [row[0] for row in table["data"]] == [url]
    answer = client.predict(account.own_workspace, FACT_QUESTION, api_name="/documents_ask")
    assert "Quellen" in answer and url in answer.split("Quellen", 1)[1]


REFUSED = {
    # what was typed (SITE: the test server, PORT: its port) -> a part of the German message
    "a name for this machine, not allowed": ("http://localhost:PORT/erdkunde/quetzalberg", "Schulnetz"),
    "a private address": ("http://10.20.30.40/wiki", "Schulnetz"),
    "link-local (cloud metadata)": ("http://169.254.169.254/latest/meta-data/", "Schulnetz"),
    "an allowed host redirecting to a refused one": ("SITE/weiter?ziel=http://localhost:PORT/erdkunde/quetzalberg", "Schulnetz"),
    "too large, sent without a length": ("SITE/riesig", "größer als 2 MiB"),
    "an image, not a web page": ("SITE/bild.png", "keine Webseite"),
    "a program, not a web page": ("SITE/programm", "keine Webseite"),
    "the allowed host on another port": ("http://127.0.0.1:CLOSED/", "Schulnetz"),
    "missing page": ("SITE/gibt-es-nicht", "HTTP 404"),
    "not http": ("ftp://127.0.0.1/datei.txt", "Nur http- und https-Adressen"),
    "empty": ("   ", "Adresse einer Webseite"),
    "too long": ("SITE/" + "a" * 2100, "zu lang"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_address_gets_a_german_error_stores_nothing_and_the_tab_keeps_working(lena, site, case):
    account, client = lena
    typed, fragment = REFUSED[case]
    port = site.rsplit(":", 1)[1]
    typed = typed.replace("SITE", site).replace("PORT", port).replace("CLOSED", str(free_port()))
    before = documents(client, account.own_workspace)
    with pytest.raises(AppError, match=fragment):
        client.predict(account.own_workspace, typed, api_name="/documents_add_url")
    assert documents(client, account.own_workspace) == before  # nothing stored, and the retrieval service still answers


def test_a_web_page_follows_the_workspace_rules_of_uploads(stack, site):
    url = f"{site}/erdkunde/quetzalberg"
    owner, _ = client_for(stack, "web-mia", classes=("8b",))
    _, student = client_for(stack, "web-noah", classes=("8b",))
    _, teacher = client_for(stack, "web-lehrer", "teacher", ("8b",))
    with pytest.raises(AppError, match="gibt es für dich nicht"):
        student.predict(owner.own_workspace, url, api_name="/documents_add_url")
    with pytest.raises(AppError, match="nur Lehrkräfte"):
        student.predict("k-8b", url, api_name="/documents_add_url")
    assert "gespeichert" in teacher.predict("k-8b", url, api_name="/documents_add_url")[0]
    assert url in student.predict("k-8b", FACT_QUESTION, api_name="/documents_ask")


def test_a_web_page_counts_against_the_workspace_storage_quota(stack, site):
    account, client = client_for(stack, "web-olga")
    stack.config.retrieval.workspace_quota_mb[account.own_workspace] = 1  # the service reads its quotas at every ingest
    try:
        assert "gespeichert" in client.predict(account.own_workspace, f"{site}/erdkunde/quetzalberg", api_name="/documents_add_url")[0]
        with pytest.raises(AppError, match="Speicherplatz"):  # 1.5 MiB of text: under the page limit, over the 1 MiB quota
            client.predict(account.own_workspace, f"{site}/viel-text", api_name="/documents_add_url")
        assert len(documents(client, account.own_workspace)) == 1
    finally:
        del stack.config.retrieval.workspace_quota_mb[account.own_workspace]


def test_a_name_that_resolves_to_a_public_and_a_private_address_is_refused():
    # No DNS server here can be told to answer so: the resolver's answer is given, the check is the real one.
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80)) for address in ("93.184.215.14", "192.168.1.10")]
    with mock.patch("socket.getaddrinfo", return_value=answers), pytest.raises(PermissionDenied, match="Schulnetz"):
        fetch_url("http://wiki.example.org/", [], max_bytes=1000, timeout=2)


def test_a_page_without_a_length_is_stopped_at_the_limit(site):
    with pytest.raises(TooLarge, match="size limit"):
        fetch_url(f"{site}/riesig", [site.removeprefix("http://")], max_bytes=100_000, timeout=5)
