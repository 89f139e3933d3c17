"""URL ingest reaches only public addresses and the ports an admin opened, and says the same for every failed connection.

Attacks finding 13: ``2002:7f00:1::1`` (6to4 of 127.0.0.1), site-local
``fec0::/10`` and the 6to4 relay range ``192.88.99.0/24`` counted as public;
an allowed intranet host was reachable on every port; and the error told a
closed port ("Verbindung abgelehnt") from an open one that speaks something
else (``BadStatusLine``), so a student could map the intranet's ports.
The fetches below are real, to listeners on loopback.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from schulki.config import Config
from schulki.retrieval.parsing import fetch_url
from schulki.retrieval.url_addresses import allowed_ports, is_public_address
from schulki.runtime.errors import InvalidInput, PermissionDenied

from tests.conftest import free_port
from tests.web_page_support import web_site

NOT_PUBLIC = {
    "2002:7f00:1::1": "6to4 of 127.0.0.1",
    "2002:a00:1::1": "6to4 of 10.0.0.1",
    "2002:c0a8:101::": "6to4 of 192.168.1.1",
    "2002:a9fe:a9fe::1": "6to4 of 169.254.169.254 (cloud metadata)",
    "fec0::1": "site-local",
    "feff:ffff::1": "site-local, its top",
    "192.88.99.1": "6to4 relay anycast",
    "192.88.99.255": "6to4 relay anycast, its top",
    "2001::1": "Teredo",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo (RFC 4380's example)",
    "64:ff9b::7f00:1": "NAT64 of 127.0.0.1",
    "64:ff9b::a00:1": "NAT64 of 10.0.0.1",
    "64:ff9b::a9fe:a9fe": "NAT64 of 169.254.169.254",
    "64:ff9b:1::808:808": "local-use NAT64",
    "::ffff:127.0.0.1": "IPv4-mapped 127.0.0.1",
    "::ffff:10.1.2.3": "IPv4-mapped 10.1.2.3",
    "::127.0.0.1": "IPv4-compatible 127.0.0.1",
    "::8.8.8.8": "IPv4-compatible (deprecated, never routed as such)",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1%1": "link-local with a zone",
    "fd12:3456::1": "unique local",
    "100.64.0.1": "carrier-grade NAT",
    "127.1.2.3": "loopback",
    "0.0.0.0": "unspecified",
}

PUBLIC = {
    "8.8.8.8": "an ordinary public IPv4 address",
    "2606:4700:4700::1111": "an ordinary public IPv6 address",
    "::ffff:8.8.8.8": "IPv4-mapped public",
    "2002:808:808::1": "6to4 of a public address",
    "64:ff9b::808:808": "NAT64 of a public address",
    "192.88.98.255": "just below the relay range",
    "192.88.100.0": "just above it",
}


@pytest.mark.parametrize("address", list(NOT_PUBLIC))
def test_an_address_that_leads_into_a_local_network_is_not_public(address):
    assert not is_public_address(address), NOT_PUBLIC[address]


@pytest.mark.parametrize("address", list(PUBLIC))
def test_a_public_address_stays_public(address):
    """Shows the rules above are not a blanket refusal: the same encodings of public addresses pass."""
    assert is_public_address(address), PUBLIC[address]


def test_an_allowed_host_opens_its_named_port_or_the_webs_own():
    allowed = ["wiki.schule.lan", "moodle.schule.lan:8443", "[fd00::5]:8080", "10.0.0.7"]
    assert allowed_ports("Wiki.Schule.LAN.", allowed) == {80, 443}
    assert allowed_ports("moodle.schule.lan", allowed) == {8443}
    assert allowed_ports("fd00:0::5", allowed) == {8080}
    assert allowed_ports("10.0.0.7", allowed) == {80, 443}
    assert allowed_ports("drucker.schule.lan", allowed) == frozenset()


@pytest.mark.parametrize("entry", ["wiki.schule.lan:0", "wiki.schule.lan:70000", "wiki.schule.lan:http", "[fd00::5]x"])
def test_a_misspelt_allowed_host_stops_the_start(entry):
    with pytest.raises(ValueError, match="allowed host"):
        Config(retrieval={"allowed_url_hosts": [entry]})


@contextlib.contextmanager
def listener(answer: bytes | None) -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts and sends answer then closes, or (None) accepts and says nothing; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            if answer is None:
                held.append(connection)  # open, silent: the client waits until its timeout
            else:
                with connection:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


def refusal(url: str, allowed: list[str]) -> tuple[type, str]:
    """The error class and message with which fetching url fails."""
    with pytest.raises((InvalidInput, PermissionDenied)) as failed:
        fetch_url(url, allowed, max_bytes=100_000, timeout=1)
    return type(failed.value), str(failed.value)


def test_every_failed_connection_to_an_allowed_port_gets_one_message():
    """Closed, open but speaking something else (an SSH banner), open and silent: a student cannot tell them apart."""
    closed = free_port()
    with listener(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n") as ssh, listener(b"") as hangs_up, listener(None) as silent:
        ports = {"closed": closed, "ssh": ssh, "hangs up": hangs_up, "silent": silent}
        allowed = [f"127.0.0.1:{port}" for port in ports.values()]
        answers = {name: refusal(f"http://127.0.0.1:{port}/", allowed) for name, port in ports.items()}
    assert set(answers.values()) == {
        (InvalidInput, "Die Seite 127.0.0.1 ist nicht erreichbar. (fetch failed: no web page could be fetched there)")
    }, answers


def test_an_allowed_host_is_refused_on_every_other_port_open_or_closed():
    with web_site() as site, listener(b"SSH-2.0-OpenSSH_9.2p1\r\n") as ssh:
        web = int(site.rsplit(":", 1)[1])
        urls = {
            "open, a web server": f"{site}/erdkunde/quetzalberg",
            "open, ssh": f"http://127.0.0.1:{ssh}/",
            "closed": f"http://127.0.0.1:{free_port()}/",
        }
        # allowed by name alone: its ports 80 and 443 only, none of these
        answers = {name: refusal(url, ["127.0.0.1"]) for name, url in urls.items()}
        assert set(answers.values()) == {(PermissionDenied, answers["closed"][1])} and "Schulnetz" in answers["closed"][1], answers
        # allowed on one other port: the web server's is still refused
        assert refusal(urls["open, a web server"], [f"127.0.0.1:{ssh}"]) == answers["closed"]
        # and on its allowed port the page comes
        body, _ = fetch_url(urls["open, a web server"], [f"127.0.0.1:{web}"], max_bytes=100_000, timeout=5)
        assert b"Quetzalberg" in body
