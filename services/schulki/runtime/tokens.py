"""Service tokens: which one a caller sends to which node, and which tokens are too weak to start with.

Every node checks only its own token (``runtime.service_token``). The gateway
holds the list of every node's token (``runtime.node_tokens``) and sends each
node its own, so one node's token opens no other node and a node is revoked
alone by changing or removing its token.
"""

from __future__ import annotations

import math
from collections import Counter

MIN_LENGTH = 32
"""Shortest token accepted: 32 characters of a random hex or base64 token are at least 128 bits."""

MIN_BITS = 80.0
"""Least estimated randomness a token must have: the Shannon entropy of its characters times its length.
The estimate is low for short random tokens (32 random hex characters score about 110), so the bar sits
below that and catches patterns such as ``aaaa...`` or ``abcabc...``."""

PUBLIC_MARKERS = ("example", "change-me", "changeme", "change_me", "replace-me", "replaceme", "placeholder", "password", "secret")
"""Words that mark a token copied from documentation or an example inventory: such a token is public."""


def token_problem(token: str) -> str | None:
    """Why a token must not be used, or None when it is strong enough.

    Weak means: shorter than MIN_LENGTH characters, containing one of the
    PUBLIC_MARKERS (the example vault's ``example-service-token-change-me-...``),
    or with less than MIN_BITS of estimated randomness (a repeated pattern such
    as ``aaaa...`` or ``abcabc...``). ``openssl rand -hex 32`` or
    ``python -c "import secrets; print(secrets.token_urlsafe(32))"`` make good tokens.
    """
    if len(token) < MIN_LENGTH:
        return f"zu kurz (too short): {len(token)} Zeichen, mindestens (at least) {MIN_LENGTH}"
    lowered = token.lower()
    for marker in PUBLIC_MARKERS:
        if marker in lowered:
            return f"enthält (contains) '{marker}': ein Beispiel-Token ist öffentlich (an example token is public)"
    counts = Counter(token)
    bits = sum(n * math.log2(len(token) / n) for n in counts.values())
    if bits < MIN_BITS:
        return f"zu wenig Zufall (too little randomness): etwa (about) {bits:.0f} Bit, mindestens (at least) {MIN_BITS:.0f}"
    return None


def check_token(token: str | None, what: str) -> None:
    """Raise StartupError when a configured token is weak; no token at all is the caller's decision."""
    from schulki.runtime.errors import StartupError

    if token is None:
        return
    problem = token_problem(token)
    if problem:
        raise StartupError(f"{what}: schwaches Dienst-Token (weak service token), {problem}. Neues Token (new token): openssl rand -hex 32")


def node_host(address: str) -> str:
    """The host part of host:port (also for [IPv6]:port), as node_tokens is keyed."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address
