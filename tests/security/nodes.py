"""Nodes for the token and TLS attacks: real embeddings services on real ports, each with its own token and certificate."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
from schulki import embeddings
from schulki.certificates import ensure_ca, ensure_certificate
from schulki.config import Config, RuntimeConfig
from schulki.embeddings.v1 import embeddings_service_pb2 as pb
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc

from tests.conftest import InProcessServer


def new_token() -> str:
    return secrets.token_urlsafe(32)


def school_ca(folder: Path) -> Path:
    """A school CA in folder; returns its certificate."""
    return ensure_ca(folder, common_name="schulki test school CA").cert_file


@contextlib.contextmanager
def node(folder: Path, name: str, token: str, names: list[str], tls: bool = True) -> Iterator[InProcessServer]:
    """One node: the embeddings service guarded by its own token, over TLS with a certificate for names."""
    runtime = RuntimeConfig(service_token=token)
    if tls:
        issued = ensure_certificate(folder, name, names, folder)
        runtime = RuntimeConfig(service_token=token, tls_cert_file=issued.cert_file, tls_key_file=issued.key_file)
    config = Config()
    config.embeddings.threads = 1
    with InProcessServer([embeddings.build(config)], runtime) as server:
        yield server


def embed(address: str, caller: RuntimeConfig) -> int:
    """Call Embed as caller would (schulki's own channel: TLS and the node's token from caller's settings); the vector size."""
    from schulki.runtime.client import open_channel

    with open_channel(address, caller) as channel:
        return pb_grpc.EmbeddingsServiceStub(channel).Embed(pb.EmbedRequest(texts=["Guten Morgen"]), timeout=30).dimension


def refusal(call) -> grpc.StatusCode:
    """The status code a call that must fail fails with."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    raise AssertionError("the call was not refused")
