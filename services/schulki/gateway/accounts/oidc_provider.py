"""The school's OpenID Connect provider (IServ, UCS@school's Keycloak, VIDIS): discovery, the code exchange, ID tokens.

The gateway is a confidential client using the authorization code flow with PKCE (S256). An ID token counts only when
its signature checks against a key of the provider's JWKS (fetched from the discovery document's ``jwks_uri`` over
HTTPS, never from the token's own header), with an asymmetric algorithm the provider lists, and when its issuer is
exactly the configured one, its audience holds schulki's client id (and ``azp`` names it where there are several),
it has not expired, and its nonce is the one this browser's sign-in started with.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from schulki.config import OidcConfig
from schulki.gateway.accounts.directory_accounts import DirectoryPerson, role_and_classes

DISCOVERY_TTL_S = 3600.0
LEEWAY_S = 60
"""Clock difference between provider and gateway that is tolerated for exp, iat and nbf."""
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""Signature algorithms accepted: never "none", never HS256 (the client secret would be the key)."""


class ProviderUnavailable(Exception):
    """The provider could not be asked (discovery, keys, the code exchange)."""


class TokenRefused(Exception):
    """An ID token (or the code exchange) that does not hold; the message says why, for the log."""


def pkce_pair() -> tuple[str, str]:
    """A code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def claim(claims: dict[str, Any], path: str) -> list[str]:
    """The values of a claim at a dotted path (``realm_access.roles``) as strings; a single value becomes a list of one."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return []
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


@dataclass
class _Discovered:
    metadata: dict[str, Any]
    keys: KeySet
    fetched_at: float


class OidcProvider:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._discovered: _Discovered | None = None

    def _client(self) -> httpx.Client:
        return httpx.Client(verify=str(self.config.ca_file) if self.config.ca_file else True, timeout=self.config.timeout_s)

    @property
    def issuer(self) -> str:
        return self.config.issuer.rstrip("/")

    def _get_json(self, client: httpx.Client, url: str) -> dict[str, Any]:
        if not url.startswith("https://"):
            raise ProviderUnavailable(f"the provider names a plain-HTTP address: {url}")
        try:
            response = client.get(url)
            response.raise_for_status()
            found = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ProviderUnavailable(f"{url}: {error}") from error
        if not isinstance(found, dict):
            raise ProviderUnavailable(f"{url}: not a JSON object")
        return found

    def discover(self, refresh: bool = False) -> _Discovered:
        """The discovery document and the provider's keys, cached for an hour (refresh: fetch again, for a new key)."""
        if self._discovered and not refresh and time.monotonic() - self._discovered.fetched_at < DISCOVERY_TTL_S:
            return self._discovered
        with self._client() as client:
            metadata = self._get_json(client, f"{self.issuer}/.well-known/openid-configuration")
            if metadata.get("issuer") != self.issuer:  # RFC 8414 3.3: a document for another issuer is an attack
                raise ProviderUnavailable(f"the discovery document names the issuer {metadata.get('issuer')!r}, not {self.issuer!r}")
            try:
                keys = KeySet.import_key_set(self._get_json(client, str(metadata["jwks_uri"])))  # type: ignore[arg-type]
            except (KeyError, ValueError, JoseError) as error:
                raise ProviderUnavailable(f"the provider's keys cannot be read: {error}") from error
        self._discovered = _Discovered(metadata, keys, time.monotonic())
        return self._discovered

    def authorization_url(self, redirect_uri: str, state: str, nonce: str, challenge: str) -> str:
        metadata = self.discover().metadata
        scopes = list(dict.fromkeys(["openid", *self.config.scopes]))
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return str(httpx.URL(str(metadata["authorization_endpoint"]), params=query))

    def exchange(self, code: str, redirect_uri: str, verifier: str) -> str:
        """The ID token for an authorization code (refused by the provider when reused, expired or not for this verifier)."""
        metadata = self.discover().metadata
        secret = self.config.client_secret_file.read_text().strip() if self.config.client_secret_file else ""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
        with self._client() as client:
            try:
                response = client.post(str(metadata["token_endpoint"]), data=data, auth=(self.config.client_id, secret))
            except httpx.HTTPError as error:
                raise ProviderUnavailable(f"token endpoint: {error}") from error
        if response.status_code != 200:
            raise TokenRefused(f"the provider refused the code: HTTP {response.status_code} {response.text[:200]}")
        token = response.json().get("id_token")
        if not isinstance(token, str):
            raise TokenRefused("the provider's answer holds no ID token")
        return token

    def verify(self, id_token: str, nonce: str, now: float | None = None) -> dict[str, Any]:
        """The ID token's claims once signature, issuer, audience, time and nonce hold; TokenRefused otherwise."""
        discovered = self.discover()
        allowed = [alg for alg in discovered.metadata.get("id_token_signing_alg_values_supported", ["RS256"]) if alg in ASYMMETRIC]
        try:
            token = jwt.decode(id_token, discovered.keys, algorithms=allowed)
        except JoseError as error:
            if "kid" not in str(error).lower():
                raise TokenRefused(f"the signature does not hold: {error}") from error
            try:  # the provider may have rolled its keys since they were fetched
                token = jwt.decode(id_token, self.discover(refresh=True).keys, algorithms=allowed)
            except JoseError as again:
                raise TokenRefused(f"the signature does not hold: {again}") from again
        except ValueError as error:
            raise TokenRefused(f"not a JWT: {error}") from error
        claims = dict(token.claims)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        moment = time.time() if now is None else now
        checks = {
            "issuer": claims.get("iss") == self.issuer,
            "audience": self.config.client_id in audiences and (len(audiences) == 1 or claims.get("azp") == self.config.client_id),
            "expiry": isinstance(claims.get("exp"), (int, float)) and claims["exp"] + LEEWAY_S > moment,
            "issued": isinstance(claims.get("iat"), (int, float)) and claims["iat"] - LEEWAY_S <= moment,
            "not before": not isinstance(claims.get("nbf"), (int, float)) or claims["nbf"] - LEEWAY_S <= moment,
            "nonce": isinstance(claims.get("nonce"), str) and secrets.compare_digest(claims["nonce"], nonce),
            "subject": isinstance(claims.get("sub"), str) and 0 < len(claims["sub"]) <= 255,
        }
        failed = [name for name, holds in checks.items() if not holds]
        if failed:
            raise TokenRefused(f"the ID token's {', '.join(failed)} does not hold")
        return claims

    def person(self, claims: dict[str, Any]) -> DirectoryPerson | None:
        """The person the claims describe; None when no claim value gives a role (and there is no default_role)."""
        role, _ = role_and_classes(self.config, claim(claims, self.config.role_claim))
        _, classes = role_and_classes(self.config, claim(claims, self.config.class_claim))
        if role is None:
            return None
        names = claim(claims, self.config.name_claim) if self.config.name_claim else []
        return DirectoryPerson(self.issuer, str(claims["sub"]), names[0] if names else "", role, classes)
