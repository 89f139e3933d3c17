"""Checks of a CA's name constraint with real verifiers (OpenSSL's command line, cryptography's, gRPC's BoringSSL, Python's
ssl), and the names and constraints the roll-out's own tasks give them."""

from __future__ import annotations

import ast
import contextlib
import datetime
import importlib.util
import ipaddress
import subprocess
from pathlib import Path

import jinja2
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tests.conftest import REPO_ROOT


def forge(ca_folder: Path, name: str, out: Path, passphrase: str | None = None, key_out: Path | None = None) -> Path:
    """A server certificate for name signed with the CA's key directly, as whoever copied the key would (its key to key_out)."""
    ca = x509.load_pem_x509_certificate((ca_folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_folder / "ca.key").read_bytes(), passphrase.encode() if passphrase else None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    try:
        alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alternative = x509.DNSName(name)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    if key_out is not None:
        key_out.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())
    )
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    return out


def openssl_accepts(ca_file: Path, cert_file: Path) -> tuple[bool, str]:
    """Whether `openssl verify` accepts the certificate (only its first one) under the CA, and what it said."""
    leaf = cert_file.with_suffix(".leaf.pem")
    leaf.write_bytes(x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(serialization.Encoding.PEM))
    run = subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), str(leaf)], capture_output=True, text=True, timeout=30)
    return run.returncode == 0, run.stdout + run.stderr


def server_verifier_accepts(ca_file: Path, cert_file: Path, name: str) -> bool:
    """Whether cryptography's web-PKI verifier accepts the certificate for name with only this CA trusted."""
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(subject)
    try:
        verifier.verify(leaf, [])
    except VerificationError:
        return False
    return True


def grpc_handshake_error(cert_file: Path, key_file: Path, ca_file: Path, server_name: str) -> str | None:
    """Serve gRPC's health service with the certificate on 127.0.0.1 through schulki's own server, and ask it as
    schulki's client does (``open_channel``, checking against ca_file) for server_name, the name the caller dials:
    None when it answers, else gRPC's error (BoringSSL's verdict on the chain)."""
    import asyncio

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from schulki.config import RuntimeConfig
    from schulki.runtime.client import open_channel
    from schulki.runtime.server import create_server

    async def ask() -> str | None:
        config = RuntimeConfig(host="127.0.0.1", tls_cert_file=cert_file, tls_key_file=key_file, tls_ca_file=ca_file)
        server = await create_server([], 0, config)
        await server.set_serving(True)
        try:
            # 127.0.0.1 stands in for the name's address; the certificate is checked for the name, as a resolved dial would.
            override = [] if server_name == "127.0.0.1" else [("grpc.ssl_target_name_override", server_name)]
            async with open_channel(f"127.0.0.1:{server.port}", config, aio=True, extra_options=override) as channel:  # type: ignore[arg-type]
                try:
                    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
                except grpc.aio.AioRpcError as error:
                    return f"{error.code().name}: {error.details()}"
            return None
        finally:
            await server.server.stop(0)

    return asyncio.run(ask())


def python_ssl_error(cert_file: Path, key_file: Path, ca_file: Path, server_name: str) -> str | None:
    """A TLS handshake with Python's ssl (OpenSSL, as the gateway's uvicorn and httpx use it) on 127.0.0.1, the client
    checking the certificate against ca_file for server_name: None when it holds, else OpenSSL's verdict."""
    import socket
    import ssl
    import threading

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            connection, _ = listener.accept()
            with connection, contextlib.suppress(OSError):
                server_context.wrap_socket(connection, server_side=True).close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = ssl.create_default_context(cafile=str(ca_file))
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=20) as sock,
                client.wrap_socket(sock, server_hostname=server_name),
            ):
                return None
        except ssl.SSLCertVerificationError as error:
            return str(error.verify_message)
        finally:
            thread.join(20)


def _role_tls_task(module_option: str) -> dict:
    """The task of the roll-out's tls.yml that calls schulki_certificate with this option (names: a host's; permitted: the CA)."""
    tasks = yaml.safe_load((REPO_ROOT / "deploy" / "roles" / "schulki_stack" / "tasks" / "tls.yml").read_text())
    return next(t for t in tasks if module_option in (t.get("schulki_certificate") or {}))


def rollout_host_names(host: str, address: str, kind: str) -> list[str]:
    """The names the roll-out gives a host's certificate: its task's own expression, rendered for this host."""
    expression = _role_tls_task("names")["vars"]["schulki_stack_tls_host_names"]
    rendered = (
        jinja2.Environment()
        .from_string(expression)
        .render(inventory_hostname=host, schulki_stack_node_address=address, schulki_plan_result={"kind": kind}, schulki_stack_tls_names=[])
    )
    return list(ast.literal_eval(rendered.strip()))


def rollout_ca_permitted(hosts: list[str], address: str, network: str) -> list[str]:
    """What the roll-out's CA task permits for these hosts (one LAN address and network for all): its filter plugin."""
    spec = importlib.util.spec_from_file_location("schulki_tls_filter", REPO_ROOT / "deploy" / "filter_plugins" / "schulki_tls.py")
    assert spec and spec.loader
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    net, mask = network.split("/")
    facts = [{"default_ipv4": {"address": address, "network": net, "netmask": mask}}]
    return plugin.schulki_tls_subtrees([*hosts, "embeddings", "retrieval", address], [], facts, [])
