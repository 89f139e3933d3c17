"""Probes of this machine's own HTTPS on 127.0.0.1: the container health check and the gateway's start-up wait.

Both ask only "does it answer?", so they need no certificate check. The
context lives here in the shared runtime, which the gateway builds on, so that
the health check never imports the gateway.
"""

from __future__ import annotations

import ssl


def loopback_context() -> ssl.SSLContext:
    """For this machine's own readiness and health probes on 127.0.0.1 only: they ask "does it answer?",
    and the certificate (the school's, for its public name) need not name 127.0.0.1. No CA certificates are loaded:
    nothing is verified, and loading the system's (ssl.create_default_context) cost 25 ms of CPU per probe, every 0.2 s
    while the gateway starts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
