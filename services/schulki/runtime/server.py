"""The gRPC server every service runs in.

``create_server`` binds a port (0 in tests) and returns the server and the
port; ``serve`` runs a service in the foreground until SIGTERM. Both add the
standard health service (NOT_SERVING until the model is loaded, SERVING after,
NOT_SERVING while shutting down), server reflection, and the runtime
interceptor: request ids, the service token, and the error table.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from schulki.config import RuntimeConfig
from schulki.runtime import logs
from schulki.runtime.errors import SchulkiError, StartupError, status_code_for
from schulki.runtime.tokens import check_token

log = logging.getLogger("schulki.runtime")

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
OPEN_METHODS = (f"/{HEALTH_SERVICE}/",)
"""Methods callable without the service token: container health checks must work without it."""


class Service(Protocol):
    """What a schulki service gives the runtime."""

    service_name: str
    """The full gRPC name, for example ``schulki.inference.v1.InferenceService``."""

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicer to the server."""

    async def start(self) -> None:
        """Load the model or open the store; the service is SERVING once this returns."""

    async def close(self) -> None:
        """Release what start() took; called after the server stopped."""


def _wrap_behavior(behavior: Callable, streaming_response: bool, method: str) -> Callable:
    """Run a handler with its request id set and SchulkiError mapped to a status code."""

    async def report(context: grpc.aio.ServicerContext, error: BaseException) -> None:
        if isinstance(error, SchulkiError):
            code = status_code_for(error)
            log.info("%s failed: %s %s", method, code.name, error.message)
            await context.abort(code, error.message)
        log.exception("%s failed unexpectedly", method)
        await context.abort(grpc.StatusCode.INTERNAL, "Interner Fehler im Dienst (internal error); the logs say more.")

    if streaming_response:

        async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for response in behavior(request, context):
                    yield response
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:
                await report(context, error)
            finally:
                log.info("%s ended after %.0f ms", method, (time.perf_counter() - started) * 1000)

        return stream_behavior

    async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            return await behavior(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:
            await report(context, error)
        finally:
            log.debug("%s ended after %.0f ms", method, (time.perf_counter() - started) * 1000)

    return unary_behavior


_HANDLER_KINDS = {
    "unary_unary": (grpc.unary_unary_rpc_method_handler, False),
    "unary_stream": (grpc.unary_stream_rpc_method_handler, True),
    "stream_unary": (grpc.stream_unary_rpc_method_handler, False),
    "stream_stream": (grpc.stream_stream_rpc_method_handler, True),
}


class RuntimeInterceptor(grpc.aio.ServerInterceptor):
    """Sets the request id, checks the service token, and maps errors to status codes."""

    def __init__(self, service_token: str | None):
        self._expected = f"Bearer {service_token}".encode() if service_token else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        metadata = dict(handler_call_details.invocation_metadata or ())
        given_id = metadata.get("x-request-id")  # text: only keys ending in -bin carry bytes
        logs.request_id.set(given_id if isinstance(given_id, str) and given_id else logs.new_request_id())
        method = handler_call_details.method
        if self._expected is not None and not method.startswith(OPEN_METHODS):
            given = str(metadata.get("authorization", "")).encode()
            if not hmac.compare_digest(given, self._expected):
                log.warning("%s refused: wrong or missing service token", method)
                return _refusal(grpc.StatusCode.UNAUTHENTICATED, "Dienst-Token fehlt oder ist falsch (missing or wrong service token).")
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        for kind, (factory, streaming_response) in _HANDLER_KINDS.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                return factory(
                    _wrap_behavior(behavior, streaming_response, method),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request_or_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    # A unary handler works for every method kind: the call ends before any request is read.
    return grpc.unary_unary_rpc_method_handler(refuse)


@dataclass
class RunningServer:
    """A started server with what the runtime needs to manage it."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the whole server and each service."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)


async def create_server(services: Sequence[Service], port: int, config: RuntimeConfig) -> RunningServer:
    """Build and start a server for the services on the given port (0 picks a free one)."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(interceptors=[RuntimeInterceptor(config.resolved_service_token())], options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.service_name for s in services]
    for service in services:
        service.register(server)
    reflection.enable_server_reflection((*names, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{port}"
    if config.tls_cert_file and config.tls_key_file:
        credentials = grpc.ssl_server_credentials([(config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes())])
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {config.host}:{port} (in use?)")
    running = RunningServer(server, bound, health_servicer, names)
    await running.set_serving(False)
    await server.start()
    return running


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(service: Service, port: int, config: RuntimeConfig, on_ready: Callable[[int], None] | None = None) -> None:
    """Run one service in the foreground until SIGTERM or SIGINT, then stop gracefully.

    A weak or example service token stops the start (StartupError): a node guarded
    by a public token is not guarded. So does listening beyond loopback without TLS,
    unless runtime.allow_plaintext says so.
    """
    check_token(config.resolved_service_token(), f"runtime.service_token of {service.service_name}")
    if not (config.tls_cert_file and config.tls_key_file) and not config.allow_plaintext and not _is_loopback(config.host):
        raise StartupError(
            f"{service.service_name}: ohne TLS nur auf 127.0.0.1 (without TLS only on loopback), nicht auf {config.host}; "
            "set runtime.tls_cert_file and runtime.tls_key_file (or runtime.allow_plaintext for a closed test lab)"
        )
    running = await create_server([service], port, config)
    log.info("%s listening on %s:%d, loading", service.service_name, config.host, running.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except BaseException:
        await running.server.stop(0)
        raise
    await running.set_serving(True)
    log.info("%s serving on port %d", service.service_name, running.port)
    if on_ready is not None:
        on_ready(running.port)
    await stop.wait()
    log.info("stopping: running requests get %.0f s to finish", config.grace_period_s)
    await running.set_serving(False)
    await running.server.stop(config.grace_period_s)
    await service.close()
    log.info("%s stopped", service.service_name)
