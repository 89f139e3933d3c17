"""Helpers for calling schulki services: channels with the service token, health checks."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schulki.config import RuntimeConfig

SERVING = health_pb2.HealthCheckResponse.SERVING


def channel_options(config: RuntimeConfig) -> list[tuple[str, int]]:
    """Message size limits matching the servers'."""
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]


def open_channel(
    address: str, config: RuntimeConfig, aio: bool = False, extra_options: list[tuple[str, int]] = ()
) -> grpc.Channel | grpc.aio.Channel:
    """A channel to a service: TLS checked against tls_ca_file when that is set, plain otherwise."""
    module = grpc.aio if aio else grpc
    options = channel_options(config) + list(extra_options)
    if config.tls_ca_file:
        credentials = grpc.ssl_channel_credentials(root_certificates=config.tls_ca_file.read_bytes())
        return module.secure_channel(address, credentials, options=options)
    return module.insecure_channel(address, options=options)


def call_metadata(config: RuntimeConfig, request_id: str | None = None) -> list[tuple[str, str]]:
    """Metadata for a call: the service token when one is configured, and the request id."""
    metadata = []
    token = config.resolved_service_token()
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    if request_id:
        metadata.append(("x-request-id", request_id))
    return metadata


def health_status(address: str, service: str = "", timeout: float = 2.0, config: RuntimeConfig | None = None) -> int | None:
    """The health status of a service, or None when it cannot be reached."""
    with open_channel(address, config or RuntimeConfig()) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return None
        return response.status


def wait_until_serving(
    address: str, timeout: float = 120.0, service: str = "", is_alive=lambda: True, config: RuntimeConfig | None = None
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
