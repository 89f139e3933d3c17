"""Each node has its own token; the gateway holds the list (issue 9, finding 7: one token shared by every node)."""

from __future__ import annotations

import grpc
from schulki.config import RuntimeConfig

from tests.security.nodes import embed, new_token, node, refusal, school_ca


def test_a_lab_pcs_token_opens_no_other_node(tmp_path):
    """Attack: a student takes the token from the lab PC they sit at and calls a GPU node with it."""
    ca = school_ca(tmp_path)
    gpu_token, lab_token = new_token(), new_token()
    with (
        node(tmp_path, "gpu", gpu_token, ["localhost", "127.0.0.1"]) as gpu,
        node(tmp_path, "lab", lab_token, ["localhost", "127.0.0.1"]) as lab,
    ):
        gateway = RuntimeConfig(tls_ca_file=ca, node_tokens={gpu.address: gpu_token, lab.address: lab_token})
        assert embed(gpu.address, gateway) == 384 and embed(lab.address, gateway) == 384, "the gateway reaches both with their own tokens"
        student = RuntimeConfig(tls_ca_file=ca, service_token=lab_token)
        assert embed(lab.address, student) == 384  # the lab PC's own service: the token opens that one node
        assert refusal(lambda: embed(gpu.address, student)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_node_is_revoked_alone(tmp_path):
    """Attack: a stolen lab PC keeps calling after the admin revoked it; the other nodes must go on unchanged."""
    ca = school_ca(tmp_path)
    gpu_token, old_lab_token = new_token(), new_token()
    # Revoking the lab PC: it gets a new token (or none at all); nothing changes on the GPU node.
    with (
        node(tmp_path, "gpu", gpu_token, ["localhost", "127.0.0.1"]) as gpu,
        node(tmp_path, "lab", new_token(), ["localhost", "127.0.0.1"]) as lab,
    ):
        stale = RuntimeConfig(tls_ca_file=ca, node_tokens={gpu.address: gpu_token, lab.address: old_lab_token})
        assert refusal(lambda: embed(lab.address, stale)) == grpc.StatusCode.UNAUTHENTICATED
        assert embed(gpu.address, stale) == 384


def test_the_gateway_sends_each_node_its_own_token_by_host_or_by_address(tmp_path):
    tokens = tmp_path / "node_tokens"
    tokens.write_text('"gpu12" = "token-of-gpu12"\n"lab01:50051" = "token-of-lab01"\n')
    gateway = RuntimeConfig(node_tokens_file=tokens, service_token="own-token-of-the-gateway-host")
    assert gateway.token_for("gpu12:50051") == "token-of-gpu12" and gateway.token_for("gpu12:50053") == "token-of-gpu12"
    assert gateway.token_for("lab01:50051") == "token-of-lab01"
    assert gateway.token_for("embeddings:50052") == "own-token-of-the-gateway-host"  # the services on its own host


KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


async def _tokens_seen_per_kind(token: str) -> dict[str, str]:
    """What ``authorization`` a server saw on each kind of call over schulki's asyncio channel (a bare gRPC echo of the header)."""
    from schulki.runtime.client import open_channel

    def seen(context) -> bytes:
        return dict(context.invocation_metadata()).get("authorization", "").encode()

    async def unary_unary(request, context):
        return seen(context)

    async def unary_stream(request, context):
        yield seen(context)

    async def stream_unary(requests, context):
        async for _ in requests:
            pass
        return seen(context)

    async def stream_stream(requests, context):
        async for _ in requests:
            pass
        yield seen(context)

    handlers = {
        kind: getattr(grpc, f"{kind}_rpc_method_handler")(function)
        for kind, function in zip(KINDS, (unary_unary, unary_stream, stream_unary, stream_stream), strict=True)
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with open_channel(f"127.0.0.1:{port}", RuntimeConfig(service_token=token), aio=True) as channel:

            async def requests():
                yield b"x"

            async def first(responses):
                async for response in responses:
                    return response

            results = {
                "unary_unary": await channel.unary_unary("/test.Echo/unary_unary")(b"x"),
                "unary_stream": await first(channel.unary_stream("/test.Echo/unary_stream")(b"x")),
                "stream_unary": await channel.stream_unary("/test.Echo/stream_unary")(requests()),
                "stream_stream": await first(channel.stream_stream("/test.Echo/stream_stream")(requests())),
            }
    finally:
        await server.stop(None)
    return {kind: value.decode() for kind, value in results.items()}


def test_every_kind_of_call_carries_the_token():
    """Attacks nothing: a streamed call (chat, ingest, upload) without the token is refused by its own node, which broke
    every stream between token-guarded nodes (grpc.aio filed a four-kind interceptor under unary-unary only)."""
    import asyncio

    token = new_token()
    assert asyncio.run(_tokens_seen_per_kind(token)) == dict.fromkeys(KINDS, f"Bearer {token}")
