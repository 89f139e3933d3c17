"""A container's HEALTHCHECK: is this service SERVING (gRPC health protocol), or does the gateway answer?

    python -m schulki.runtime.healthcheck inference        # exit 0 when SERVING, 1 otherwise
    python -m schulki.runtime.healthcheck gateway          # GET /healthz on the gateway's port (HTTPS unless gateway.https is off)
    python -m schulki.runtime.healthcheck gateway --node gpu12:50051 --expect down
                                                           # exit 0 once the gateway's own health view has the node out
                                                           # of its line (the roll-out's drain); --expect serving: back in

The port, TLS files and service token come from the same settings the service
reads (SCHULKI_* environment, SCHULKI_CONFIG). With TLS on, the check connects
by the name in the certificate, ``SCHULKI_TLS_SERVER_NAME`` (the node's host name).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

from schulki.runtime import registry
from schulki.runtime.loopback import loopback_context


def check_grpc(service: str, address: str, timeout: float) -> str | None:
    """None when the service reports SERVING, else what is wrong."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from schulki.config import load_config

    runtime = load_config().runtime
    if runtime.tls_cert_file:
        root = (runtime.tls_ca_file or runtime.tls_cert_file).read_bytes()
        options = [("grpc.ssl_target_name_override", os.environ.get("SCHULKI_TLS_SERVER_NAME", "localhost"))]
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root), options=options)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=registry.spec(service).proto_service), timeout=timeout
            )
        except grpc.RpcError as error:
            return f"{service} at {address}: {error.code().name}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{service} at {address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}"
    return None


def check_http(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=loopback_context()) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        return f"{url}: {error}"


def check_node(url: str, node: str, expect: str, timeout: float) -> str | None:
    """None when the gateway's health view has the node (host:port) as expected: in its line (serving) or out (down)."""
    import json

    try:
        with urllib.request.urlopen(url, timeout=timeout, context=loopback_context()) as response:
            nodes = json.load(response).get("nodes", {})
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"{url}: {error}"
    views = [pool[node] for pool in nodes.values() if node in pool]
    if not views:
        return f"the gateway does not list {node}"
    serving = any(views)
    if serving != (expect == "serving"):
        return f"the gateway has {node} {'serving' if serving else 'down'}, not {expect}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schulki.runtime.healthcheck", description="Exit 0 when the service is healthy.")
    parser.add_argument("service", choices=[*registry.NAMES, "gateway"])
    parser.add_argument("--address", help="host:port to check; default 127.0.0.1 and the service's configured port")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--node", help="gateway only: check the gateway's view of this node (host:port) instead")
    parser.add_argument("--expect", choices=["down", "serving"], default="serving", help="with --node: the state to wait for")
    args = parser.parse_args(argv)
    from schulki.config import SettingsError, load_config

    try:
        config = load_config()
    except SettingsError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    port = config.gateway.port if args.service == "gateway" else registry.spec(args.service).port(config)
    address = args.address or f"127.0.0.1:{port}"
    if args.service == "gateway" and args.node:
        problem = check_node(f"{'https' if config.gateway.https else 'http'}://{address}/healthz", args.node, args.expect, args.timeout)
    elif args.service == "gateway":
        problem = check_http(f"{'https' if config.gateway.https else 'http'}://{address}/healthz", args.timeout)
    else:
        problem = check_grpc(args.service, address, args.timeout)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
