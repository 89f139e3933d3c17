"""Helpers for calling schulki services: channels with the node's own service token, health checks."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Literal, TypeAlias, TypeVar, overload

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schulki.config import RuntimeConfig

SERVING = health_pb2.HealthCheckResponse.SERVING

# The interceptors below pass any call on unchanged: generic over its messages, as grpc's own stubs declare them.
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Requests: TypeAlias = "AsyncIterable[_Request] | Iterable[_Request]"


def channel_options(config: RuntimeConfig) -> list[tuple[str, int]]:
    """Message size limits matching the servers'."""
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]


class _TokenHeader:
    """Adds ``authorization: Bearer <token>`` to a call on an asyncio channel: the token of the node it leads to."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if "authorization" not in metadata.keys():  # noqa: SIM118 - grpc-stubs types `in` on Metadata as a test for (key, value) pairs
            metadata.add(*self._header)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)


# One class per kind of call: grpc.aio.Channel files an interceptor under the first kind it
# implements only (an if/elif chain, grpc/grpc#31442), so one class for all four kinds put the
# token on unary calls alone, and every streamed call (chat, ingest, uploads) went without it.
class _UnaryUnaryToken(_TokenHeader, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryUnaryCall[_Request, _Response]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> _Response | grpc.aio.UnaryUnaryCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamToken(_TokenHeader, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryStreamCall[_Request, _Response]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> AsyncIterator[_Response] | grpc.aio.UnaryStreamCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request)


class _StreamUnaryToken(_TokenHeader, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, _Requests], Awaitable[grpc.aio.StreamUnaryCall[_Request, _Response]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: _Requests,
    ) -> _Response | grpc.aio.StreamUnaryCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStreamToken(_TokenHeader, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, _Requests], Awaitable[grpc.aio.StreamStreamCall[_Request, _Response]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: _Requests,
    ) -> AsyncIterator[_Response] | grpc.aio.StreamStreamCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request_iterator)


def _token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """The token on every kind of call of an asyncio channel."""
    return [kind(token) for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)]


class _SyncCallDetails(
    collections.namedtuple("_SyncCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _SyncTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """The same for a blocking channel."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ())
        if not any(key == "authorization" for key, _ in metadata):
            metadata.append(self._header)
        return _SyncCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, _Request], grpc._CallFuture[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request: _Request,
    ) -> grpc._CallFuture[_Response]:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, _Request], grpc._CallIterator[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request: _Request,
    ) -> grpc._CallIterator[_Response]:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Iterator[_Request]], grpc._CallFuture[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[_Request],
    ) -> grpc._CallFuture[_Response]:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Iterator[_Request]], grpc._CallIterator[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[_Request],
    ) -> grpc._CallIterator[_Response]:
        return continuation(self._details(client_call_details), request_iterator)


@overload
def open_channel(
    address: str, config: RuntimeConfig, aio: Literal[False] = False, extra_options: Sequence[tuple[str, int]] = ()
) -> grpc.Channel: ...


@overload
def open_channel(
    address: str, config: RuntimeConfig, aio: Literal[True], extra_options: Sequence[tuple[str, int]] = ()
) -> grpc.aio.Channel: ...


def open_channel(
    address: str, config: RuntimeConfig, aio: bool = False, extra_options: Sequence[tuple[str, int]] = ()
) -> grpc.Channel | grpc.aio.Channel:
    """A channel to one node: TLS checked against tls_ca_file when that is set, plain otherwise.

    Every call on it carries that node's own token (``config.token_for(address)``),
    so the caller never picks a token per call and one node's token never goes to another.
    """
    options = channel_options(config) + list(extra_options)
    token = config.token_for(address)
    credentials = grpc.ssl_channel_credentials(root_certificates=config.tls_ca_file.read_bytes()) if config.tls_ca_file else None
    if aio:
        interceptors = _token_interceptors(token) if token else None
        if credentials is not None:
            return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    channel = (
        grpc.secure_channel(address, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(address, options=options)
    )
    return grpc.intercept_channel(channel, _SyncTokenInterceptor(token)) if token else channel


def call_metadata(config: RuntimeConfig, request_id: str | None = None) -> list[tuple[str, str]]:
    """Metadata for a call: the request id. (The service token travels with the channel, see open_channel.)"""
    return [("x-request-id", request_id)] if request_id else []


def health_status(address: str, service: str = "", timeout: float = 2.0, config: RuntimeConfig | None = None) -> int | None:
    """The health status of a service, or None when it cannot be reached."""
    with open_channel(address, config or RuntimeConfig()) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return None
        return response.status


def wait_until_serving(
    address: str,
    timeout: float = 120.0,
    service: str = "",
    is_alive: Callable[[], bool] = lambda: True,
    config: RuntimeConfig | None = None,
) -> None:
    """Wait until the service at address reports SERVING; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_status(address, service, timeout=1.0, config=config) == SERVING:
            return
        if not is_alive():
            raise RuntimeError(f"the service at {address} exited before it was serving")
        time.sleep(0.1)
    raise TimeoutError(f"{address} was not SERVING after {timeout:.0f} s")
