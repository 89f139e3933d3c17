"""Weak and example service tokens are refused at start (issue 9, finding 7: the example vault's token passed)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from schulki.runtime.tokens import token_problem

from tests.conftest import ServiceProcess, free_port

EXAMPLE_TOKEN = "example-service-token-change-me-0123456789abcdef"


@pytest.mark.parametrize(
    "weak",
    [
        EXAMPLE_TOKEN,
        "s3cret-token",  # short
        "a" * 48,  # no randomness
        "abcabcabcabcabcabcabcabcabcabcabcabc",  # a pattern
        "schulki-password-2024-schulki-password-2024",  # a public word
        "please-change-me-before-going-live-0123456789",
    ],
)
def test_weak_tokens_are_named_weak(weak):
    """Attack: a student tries the tokens a careless roll-out would use (the example's, short ones, patterns)."""
    assert token_problem(weak)


@pytest.mark.parametrize("make", [lambda: secrets.token_hex(16), lambda: secrets.token_hex(32), lambda: secrets.token_urlsafe(32)])
def test_random_tokens_of_128_bits_and_more_pass(make):
    for _ in range(200):
        assert token_problem(make()) is None


def test_a_node_with_the_example_token_refuses_to_start():
    """Attack: a school copied the example vault, so every node is guarded by a token anyone can read on GitHub."""
    process = ServiceProcess("embeddings", env={"SCHULKI_RUNTIME__SERVICE_TOKEN": EXAMPLE_TOKEN, "SCHULKI_EMBEDDINGS__THREADS": "1"}).start(
        wait=False
    )
    try:
        code, log = process.process.wait(timeout=60), process.process.stderr.read()
    except subprocess.TimeoutExpired:
        process.stop()
        pytest.fail("the node started with the example token")
    assert code == 2 and "schwaches Dienst-Token (weak service token)" in log and EXAMPLE_TOKEN not in log


def test_the_gateway_refuses_a_weak_node_token_at_start(tmp_path):
    """Attack: the gateway's list holds a weak token for one node; it must not start with it."""
    env = {
        **os.environ,
        "SCHULKI_DATA_DIR": str(tmp_path),
        "SCHULKI_GATEWAY__PORT": str(free_port()),
        "SCHULKI_GATEWAY__HOST": "127.0.0.1",
        "SCHULKI_RUNTIME__NODE_TOKENS": '{"pc-raum112-01": "changeme-changeme-changeme-changeme"}',
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "schulki.gateway"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, log = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the gateway started with a weak node token")
    assert process.returncode == 2 and "node_tokens[pc-raum112-01]" in log and "changeme-changeme" not in log
