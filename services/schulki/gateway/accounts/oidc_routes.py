"""The routes of "Mit Schulkonto anmelden": to the school's OpenID Connect provider and back (oidc_provider.py checks).

``GET /login/oidc`` starts a sign-in: a fresh ``state``, ``nonce`` and PKCE verifier go into a short-lived cookie
signed with the gateway's secret (HttpOnly, only for /login/oidc), and the browser is sent to the provider.
``GET /login/oidc/callback`` takes the provider's answer: its ``state`` must be the one in this browser's cookie (so
nobody can sign a student into the attacker's account by sending her a callback link: login CSRF), each state is
taken once (a replayed answer is refused, and the provider refuses a code twice), the code is exchanged with the
verifier, the ID token is checked, and the person signs in as their directory account. Where they go afterwards
is a path on this gateway, never another site (no open redirect).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from schulki.gateway.accounts.database import Account
from schulki.gateway.accounts.directory_accounts import DirectoryAccounts, SignInRefused
from schulki.gateway.accounts.oidc_provider import OidcProvider, ProviderUnavailable, TokenRefused, pkce_pair
from schulki.gateway.context import Gateway
from schulki.gateway.web.i18n import strings

log = logging.getLogger(__name__)

STATE_COOKIE = "schulki_oidc"
STATE_PATH = "/login/oidc"
STATE_TTL_S = 600
"""How long a sign-in at the provider may take, from the click to the callback."""


def safe_return(path: str | None, lang: str) -> str:
    """A path on this gateway to go to after signing in; anything else (another host, ``//host``, ``/\\host``) is home."""
    home = "/en/" if lang == "en" else "/"
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")) or any(c in path for c in "\\\r\n\t"):
        return home
    return path


class _States:
    """States already taken, until they expire: each answer of the provider counts once."""

    def __init__(self) -> None:
        self._taken: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, state: str) -> bool:
        now = time.time()
        with self._lock:
            self._taken = {key: until for key, until in self._taken.items() if until > now}
            if state in self._taken:
                return False
            self._taken[state] = now + STATE_TTL_S
            return True


def _sign(secret: bytes, payload: dict) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
    mark = hmac.new(secret, f"oidc-state:{body}".encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mark}"


def _unsign(secret: bytes, value: str) -> dict | None:
    body, _, mark = value.partition(".")
    expected = hmac.new(secret, f"oidc-state:{body}".encode(), hashlib.sha256).hexdigest()
    if not body or not hmac.compare_digest(mark, expected):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and payload.get("e", 0) > time.time() else None


StartSession = Callable[[Gateway, Request, Account, Response], Response]
"""auth.start_session: a signed-in account's session cookie on the response."""
LoginPage = Callable[..., HTMLResponse]
"""auth.login_page(lang, error, status, school_account=...): the login form with a message."""


class OidcFlow:
    """One gateway's sign-ins through its provider: the cached provider, the states taken, the directory accounts."""

    def __init__(self, gateway: Gateway, start_session: StartSession, login_page: LoginPage) -> None:
        self.gateway = gateway
        self.start_session = start_session
        self.login_page = login_page
        self._providers: dict[tuple, OidcProvider] = {}
        self._states = _States()
        self._directory_accounts = DirectoryAccounts(gateway.accounts)

    def provider(self) -> OidcProvider:
        config = self.gateway.config.gateway.oidc
        key = (config.issuer, config.client_id, str(config.ca_file))
        if key not in self._providers:  # discovery and keys are cached per provider
            self._providers.clear()
            self._providers[key] = OidcProvider(config)
        found = self._providers[key]
        found.config = config
        return found

    def redirect_uri(self, request: Request) -> str:
        return self.gateway.config.gateway.oidc.redirect_url or str(request.url_for("oidc_callback"))

    def refused(self, lang: str, key: str, status: int) -> HTMLResponse:
        response = self.login_page(lang, strings(lang)[key], status, school_account=self.gateway.config.gateway.oidc.enabled)
        response.delete_cookie(STATE_COOKIE, path=STATE_PATH)
        return response

    async def start(self, request: Request, lang: str, back: str) -> Response:
        if not self.gateway.config.gateway.oidc.enabled:
            return self.refused(lang, "login_oidc_off", 404)
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier, challenge = pkce_pair()
        try:
            target = await run_in_threadpool(self.provider().authorization_url, self.redirect_uri(request), state, nonce, challenge)
        except ProviderUnavailable as error:
            log.warning("the OpenID provider cannot be asked: %s", error)
            return self.refused(lang, "login_directory_down", 503)
        payload = {"s": state, "n": nonce, "v": verifier, "l": lang, "r": safe_return(back, lang), "e": int(time.time()) + STATE_TTL_S}
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            STATE_COOKIE,
            _sign(self.gateway.secret, payload),
            max_age=STATE_TTL_S,
            httponly=True,
            samesite="lax",  # the provider's redirect back is a top-level GET: Lax cookies go along
            secure=request.url.scheme == "https",
            path=STATE_PATH,
        )
        return response

    async def callback(self, request: Request, code: str, state: str, error: str, issuer: str) -> Response:
        started = _unsign(self.gateway.secret, request.cookies.get(STATE_COOKIE, ""))
        lang = started["l"] if started and started.get("l") in ("de", "en") else "de"
        if not self.gateway.config.gateway.oidc.enabled:
            return self.refused(lang, "login_oidc_off", 404)
        if started is None or not state or not hmac.compare_digest(str(started.get("s", "")), state):
            # no sign-in of this browser, or another one's answer: a link an attacker sent (login CSRF), or a stale tab
            return self.refused(lang, "login_oidc_state", 400)
        if error or not code:
            return self.refused(lang, "login_oidc_cancelled", 401)
        if not self._states.take(state):
            return self.refused(lang, "login_oidc_state", 400)
        provider = self.provider()
        if issuer and issuer != provider.issuer:  # RFC 9207: the answer names the provider that gave it (mix-up)
            log.warning("OpenID sign-in refused: an answer of the issuer %r", issuer[:200])
            return self.refused(lang, "login_oidc_refused", 401)
        try:
            id_token = await run_in_threadpool(provider.exchange, code, self.redirect_uri(request), started["v"])
            claims = await run_in_threadpool(provider.verify, id_token, started["n"])
        except ProviderUnavailable as failure:
            log.warning("the OpenID provider cannot be asked: %s", failure)
            return self.refused(lang, "login_directory_down", 503)
        except TokenRefused as failure:
            log.warning("OpenID sign-in refused: %s", failure)
            return self.refused(lang, "login_oidc_refused", 401)
        person = provider.person(claims)
        if person is None:
            return self.refused(lang, "login_no_role", 403)
        try:
            account = await run_in_threadpool(self._directory_accounts.sign_in, person)
        except SignInRefused as failure:
            return self.refused(lang, str(failure), 403)
        home = RedirectResponse(safe_return(started.get("r"), lang), status_code=303)
        response = self.start_session(self.gateway, request, account, home)
        response.delete_cookie(STATE_COOKIE, path=STATE_PATH)
        return response


def router(gateway: Gateway, start_session: StartSession, login_page: LoginPage) -> APIRouter:
    """The sign-in routes; auth.py, which includes them, hands in how it opens a session and draws the login page."""
    routes = APIRouter()
    flow = OidcFlow(gateway, start_session, login_page)

    @routes.get("/login/oidc", include_in_schema=False)
    async def start(request: Request, lang: str = "de", back: str = "") -> Response:
        return await flow.start(request, "en" if lang == "en" else "de", back)

    @routes.get("/login/oidc/callback", include_in_schema=False, name="oidc_callback")
    async def callback(request: Request, code: str = "", state: str = "", error: str = "", iss: str = "") -> Response:
        return await flow.callback(request, code, state, error, iss)

    return routes


def logout_url(gateway: Gateway, request: Request, account: Account | None, lang: str) -> str | None:
    """The provider's logout address for a person the provider signed in (their provider session ends too), else None."""
    config = gateway.config.gateway.oidc
    if account is None or not config.enabled or DirectoryAccounts(gateway.accounts).issuer_of(account.id) != config.issuer.rstrip("/"):
        return None
    try:
        end = OidcProvider(config).discover().metadata.get("end_session_endpoint")
    except ProviderUnavailable:
        return None
    if not isinstance(end, str):
        return None
    back = str(request.url_for("show_login").include_query_params(lang=lang))
    return str(httpx.URL(end, params={"client_id": config.client_id, "post_logout_redirect_uri": back}))
