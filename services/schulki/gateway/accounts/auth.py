"""The German (or English) login page, logout, and who is logged in.

Gradio's own login page is English only and has no rate limit, so the gateway
has its own: a plain HTML form, rate-limited per account name and per address,
that sets an HttpOnly session cookie (login_limits.py says what is limited, and why). Gradio is mounted with an
``auth_dependency`` that reads that cookie (or an API key, for gradio_client).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from schulki.gateway.accounts import oidc_routes
from schulki.gateway.accounts.database import Account
from schulki.gateway.accounts.directory_accounts import SignInRefused
from schulki.gateway.accounts.login_limits import LoginRefused
from schulki.gateway.accounts.sign_in import DirectoryDown, PasswordSignIn
from schulki.gateway.context import SESSION_COOKIE, Gateway
from schulki.gateway.web.addresses import client_address
from schulki.gateway.web.i18n import strings

PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>schulki – {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f6f8; display: flex; justify-content: center; margin-top: 10vh; }}
form {{ background: white; padding: 2em; border-radius: 8px; box-shadow: 0 1px 4px #0002; width: 20em; }}
label {{ display: block; margin-top: 1em; }} input {{ width: 100%; padding: .5em; box-sizing: border-box; }}
button {{ margin-top: 1.5em; width: 100%; padding: .6em; background: #2563eb; color: white; border: 0; border-radius: 4px; font-size: 1em; }}
.error {{ color: #b91c1c; }} .school {{ display: block; margin-top: 1em; text-align: center; padding: .6em; border: 1px solid #2563eb; border-radius: 4px; color: #2563eb; text-decoration: none; }} .lang {{ margin-top: 1em; font-size: .9em; text-align: right; }}
</style></head>
<body><form method="post" action="login">
<h1>schulki</h1><p>{intro}</p>{error}
<input type="hidden" name="lang" value="{lang}">
<label for="name">{name_label}</label><input id="name" name="name" autocomplete="username" required autofocus>
<label for="password">{password_label}</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">{submit}</button>{school_account}
<div class="lang"><a href="login?lang={other_lang}">{other_label}</a></div>
</form></body></html>"""


def login_page(lang: str, error: str = "", status: int = 200, school_account: bool = False) -> HTMLResponse:
    """The login form; with ``school_account`` also the link "Mit Schulkonto anmelden" to the OIDC provider."""
    s = strings(lang)
    other = "en" if lang == "de" else "de"
    return HTMLResponse(
        PAGE.format(
            lang=lang,
            title=s["login_title"],
            intro=s["login_intro"],
            name_label=s["login_name"],
            password_label=s["login_password"],
            submit=s["login_submit"],
            other_lang=other,
            other_label=s["other_language"],
            error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
            school_account=f'<a class="school" href="login/oidc?lang={lang}">{s["login_school_account"]}</a>' if school_account else "",
        ),
        status_code=status,
    )


DEVICE_COOKIE = "schulki_device"
"""Set by a successful login and kept after logout: this browser has logged in as that name before (login_limits.py)."""


def _device_mark(secret: bytes, name: str, device: str) -> str:
    return hmac.new(secret, f"login-device:{name.lower()}:{device}".encode(), hashlib.sha256).hexdigest()[:32]


def known_device(request: Request, secret: bytes, name: str) -> str | None:
    """The id in the browser's device cookie when the cookie was made by a login as ``name``; else None (no cookie, another name, forged)."""
    device, _, mark = request.cookies.get(DEVICE_COOKIE, "").partition(".")
    if device and mark and hmac.compare_digest(mark, _device_mark(secret, name, device)):
        return device
    return None


def home_path(lang: str) -> str:
    return "/en/" if lang == "en" else "/"


def start_session(gateway: Gateway, request: Request, account: Account, redirect: Response) -> Response:
    """Open a session for the account and set its cookie on ``redirect`` (the password form and the OIDC callback)."""
    settings = gateway.config.gateway
    token = gateway.accounts.open_session(account.id, settings.session_hours, keep=settings.sessions_per_user)
    redirect.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return redirect


def router(gateway: Gateway) -> APIRouter:
    routes = APIRouter()
    password_sign_in = PasswordSignIn(gateway.config.gateway, gateway.accounts)

    def page(lang: str, error: str = "", status: int = 200) -> HTMLResponse:
        return login_page(lang, error, status, school_account=gateway.config.gateway.oidc.enabled)

    routes.include_router(oidc_routes.router(gateway, start_session, login_page))

    @routes.get("/login", include_in_schema=False, name="show_login")
    def show_login(lang: str = "de") -> HTMLResponse:
        return page("en" if lang == "en" else "de")

    @routes.post("/login", include_in_schema=False)
    async def do_login(request: Request, name: str = Form(""), password: str = Form(""), lang: str = Form("de")) -> Response:
        lang = "en" if lang == "en" else "de"
        s = strings(lang)
        address = client_address(request)
        name = name.strip()
        device = known_device(request, gateway.secret, name)
        try:
            await gateway.login_limiter.start(name, address, device)
        except LoginRefused as refused:
            message = {"busy": "login_busy", "logins": "login_too_many"}.get(refused.reason, "login_blocked")
            response = page(lang, s[message], status=429)
            response.headers["Retry-After"] = str(refused.retry_after_s)
            return response
        account = None
        try:
            account = await password_sign_in.check(name, password)
        except SignInRefused as refused:
            return page(lang, s[str(refused)], status=403)
        except DirectoryDown:
            return page(lang, s["login_directory_down"], status=503)
        finally:
            await run_in_threadpool(gateway.login_limiter.finish, name, address, account is not None, device)
        if account is None:
            return page(lang, s["login_failed"], status=401)
        settings = gateway.config.gateway
        redirect = start_session(gateway, request, account, RedirectResponse(home_path(lang), status_code=303))
        device = device or secrets.token_urlsafe(12)
        redirect.set_cookie(
            DEVICE_COOKIE,
            f"{device}.{_device_mark(gateway.secret, account.name, device)}",
            max_age=int(settings.login_device_days * 86400),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/login",
        )
        return redirect

    @routes.get("/logout", include_in_schema=False)
    def logout(request: Request, lang: str = "de") -> RedirectResponse:
        token = request.cookies.get(SESSION_COOKIE)
        lang = "en" if lang == "en" else "de"
        provider_logout = None
        if token:
            provider_logout = oidc_routes.logout_url(gateway, request, gateway.accounts.session_user(token), lang)
            gateway.accounts.close_session(token)
        response = RedirectResponse(provider_logout or f"/login?lang={lang}", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return routes
