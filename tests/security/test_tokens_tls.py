"""A node refuses every call that does not come over TLS with its own token (issue 12: encryption by default)."""

from __future__ import annotations

import subprocess

import grpc
import pytest
from schulki.config import RuntimeConfig
from schulki.embeddings.v1 import embeddings_service_pb2 as pb
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc

from tests.conftest import ServiceProcess
from tests.security.nodes import embed, new_token, node, refusal, school_ca


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls-node")
    ca = school_ca(folder)
    token = new_token()
    with node(folder, "gpu-node", token, ["localhost", "127.0.0.1"]) as server:
        yield server, ca, token


def test_a_plain_text_call_is_refused_even_with_the_right_token(guarded):
    """Attack: a student on the LAN calls a node's published port in plain text, as the token would travel readable."""
    server, _, token = guarded
    with grpc.insecure_channel(server.address) as channel:
        call = lambda: pb_grpc.EmbeddingsServiceStub(channel).Embed(  # noqa: E731
            pb.EmbedRequest(texts=["x"]), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
        assert refusal(call) == grpc.StatusCode.UNAVAILABLE


def test_a_tls_call_without_the_token_is_refused(guarded):
    """Attack: a student speaks TLS to a node (the CA certificate is public) but has no token."""
    server, ca, _ = guarded
    assert refusal(lambda: embed(server.address, RuntimeConfig(tls_ca_file=ca))) == grpc.StatusCode.UNAUTHENTICATED


def test_a_tls_call_with_a_guessed_token_is_refused(guarded):
    """Attack: a student guesses a token (or tries the example vault's)."""
    server, ca, _ = guarded
    for guess in (new_token(), "example-service-token-change-me-0123456789abcdef"):
        assert (
            refusal(lambda guess=guess: embed(server.address, RuntimeConfig(tls_ca_file=ca, service_token=guess)))
            == grpc.StatusCode.UNAUTHENTICATED
        )


def test_the_gateway_with_the_school_ca_and_the_token_gets_in(guarded):
    server, ca, token = guarded
    assert embed(server.address, RuntimeConfig(tls_ca_file=ca, node_tokens={server.address: token})) == 384


def test_a_node_with_a_certificate_from_another_ca_is_not_trusted(guarded, tmp_path):
    """Attack: a student runs a fake node with a certificate they made themselves, to collect the prompts and the token."""
    server, _, token = guarded
    other_ca = school_ca(tmp_path)
    assert refusal(lambda: embed(server.address, RuntimeConfig(tls_ca_file=other_ca, service_token=token))) == grpc.StatusCode.UNAVAILABLE


def test_a_node_refuses_to_listen_on_the_lan_without_tls():
    """Attack: a node started without its certificate would publish its port in plain text; it must not start."""
    process = ServiceProcess(
        "embeddings",
        env={"SCHULKI_RUNTIME__HOST": "0.0.0.0", "SCHULKI_RUNTIME__SERVICE_TOKEN": new_token(), "SCHULKI_EMBEDDINGS__THREADS": "1"},
    ).start(wait=False)
    try:
        code = process.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.stop()
        pytest.fail("the node listened on every address without TLS")
    assert code == 2 and "ohne TLS nur auf 127.0.0.1 (without TLS only on loopback)" in process.process.stderr.read()
