"""The gateway's web app: the login page, the OpenAI-compatible API under /v1 and the Gradio UI, on one port.

``create_app(config)`` builds it; ``serve(config)`` runs it with uvicorn.
The German UI is mounted at ``/``, the English one at ``/en/``; both ask the
same auth dependency who is logged in, so an unknown visitor is sent to the
login page and every Gradio route refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import gradio as gr
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException

from schulki.config import Config
from schulki.gateway.accounts import auth
from schulki.gateway.api import audio as audio_api
from schulki.gateway.api import chat as chat_api
from schulki.gateway.api import completions as completions_api
from schulki.gateway.api import document_questions as document_questions_api
from schulki.gateway.api import documents as documents_api
from schulki.gateway.api import errors as api_errors
from schulki.gateway.api import files as files_api
from schulki.gateway.api import moderation as moderation_api
from schulki.gateway.api import openapi as openapi_api
from schulki.gateway.api import vector_stores as vector_stores_api
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.limits import BodyLimitMiddleware
from schulki.gateway.context import Gateway, private_folder
from schulki.gateway.privacy import retention
from schulki.gateway.ui import PAGE_CSS, build_ui, theme
from schulki.gateway.web.gradio_guard import GradioGuard
from schulki.gateway.web.origin_guard import OriginGuard
from schulki.gateway.web.request_ids import LoginRedirectMiddleware, RequestIdMiddleware
from schulki.gateway.web.security_headers import SecurityHeadersMiddleware
from schulki.runtime import logs

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0
UPLOAD_PATHS = ("/v1/audio/", "/v1/files", "/gradio_api/upload", "/en/gradio_api/upload")


async def _purge_expired(gateway: Gateway) -> None:
    """Delete chats, documents, transcripts, uploads and backups past their retention period, at start and every hour."""
    while True:
        try:
            await retention.purge_expired(gateway)
        except Exception:
            log.exception("retention purge failed")
        await asyncio.sleep(PURGE_INTERVAL_S)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(config: Config, gateway: Gateway | None = None) -> FastAPI:
    gateway = gateway or Gateway.create(config)
    tmp = private_folder(Path(config.data_dir) / "gateway" / "uploads")
    os.environ.setdefault("GRADIO_TEMP_DIR", str(tmp))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        purge = asyncio.create_task(_purge_expired(gateway))
        try:
            yield
        finally:
            purge.cancel()
            await gateway.close()

    app = FastAPI(title="schulki", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    # Starlette runs the middleware added last first: the security headers (on every answer, refusals too), the login
    # redirect, the request id, the origin check, then body limits, then Gradio's file checks. All are plain ASGI:
    # nothing stands between a streamed answer and the client.
    app.add_middleware(GradioGuard, gateway=gateway)
    app.add_middleware(BodyLimitMiddleware, config=config.gateway, upload_prefixes=UPLOAD_PATHS)
    app.add_middleware(OriginGuard, config=config.gateway)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(LoginRedirectMiddleware, gateway=gateway)
    app.add_middleware(SecurityHeadersMiddleware)

    api_errors.install(app)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v1/"):  # unknown routes and methods under /v1 answer in OpenAI's shape too
            return ApiError(error.status_code, str(error.detail), "invalid_request_error").response()
        return await http_exception_handler(request, error)

    @app.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> dict:
        body: dict = {"gateway": "ok", "services": {name: gateway.available(name) for name in gateway.service_names()}}
        # Which node is in the line, for the roll-out's drain (`healthcheck gateway --node`, run inside
        # the gateway's container): only on loopback, so the nodes' names stay off the school's LAN.
        if request.client is not None and _is_loopback(request.client.host):
            body["nodes"] = {name: {node.address: node.healthy for node in nodes} for name, nodes in gateway.nodes().items()}
        return body

    app.include_router(auth.router(gateway))
    for api in (chat_api, completions_api, audio_api, documents_api, files_api, vector_stores_api, document_questions_api, moderation_api):
        app.include_router(api.router)  # each route takes the gateway from app.state (api/deps.py)
    openapi_api.install(app)

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown_api_route(path: str) -> None:
        # without this the UI mounted at "/" would answer with Gradio's own 404
        raise ApiError(
            404,
            f"There is no /v1/{path} here; schulki offers models, chat/completions, embeddings, audio/transcriptions, files and vector_stores.",
            code="unknown_url",
        )

    def logged_in(request: Request) -> str | None:
        account = gateway.account_from_headers(request.cookies, request.headers.get("authorization"))
        return account.name if account else None

    common = dict(
        auth_dependency=logged_in,
        theme=theme(),
        footer_links=[],
        run_history=False,
        enable_monitoring=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        max_file_size=config.gateway.max_upload_bytes,
        allowed_paths=[str(gateway.files_root)],
        show_error=True,
        css=PAGE_CSS,
    )
    # The more specific mount first: Starlette matches mounts in order and "/" would catch "/en".
    # app_kwargs: without them each Gradio app lists its internal routes to anyone at /openapi.json (/v1's is at /v1/openapi.json)
    gr.mount_gradio_app(app, build_ui(gateway, "en"), path="/en", app_kwargs={"openapi_url": None}, **common)
    gr.mount_gradio_app(app, build_ui(gateway, "de"), path="/", app_kwargs={"openapi_url": None}, **common)
    return app


def serve(config: Config) -> None:
    """Run the gateway with uvicorn: HTTPS on gateway.port (unless turned off), and the HTTP redirect port when set."""
    import uvicorn

    from schulki.gateway.web.https import https_files, start_redirect_server
    from schulki.runtime.tokens import check_token

    logs.configure(config.runtime.log_level, config.runtime.log_content)
    os.umask(0o077)  # what the gateway writes (accounts, uploads, transcripts) is students' data: private to its user
    check_token(config.runtime.resolved_service_token(), "gateway: runtime.service_token")
    for node, token in config.runtime.resolved_node_tokens().items():
        check_token(token, f"gateway: runtime.node_tokens[{node}]")
    files = https_files(config)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.gateway.host,
            port=config.gateway.port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # uvicorn would believe X-Forwarded-For from 127.0.0.1; addresses.client_address decides instead
            ssl_certfile=str(files.cert_file) if files else None,
            ssl_keyfile=str(files.key_file) if files else None,
        )
    )

    async def run() -> None:
        redirect = None
        if files and config.gateway.redirect_port is not None:
            redirect = await start_redirect_server(config.gateway.host, config.gateway.redirect_port, config.gateway.redirect_https_port)
        try:
            await server.serve()
        finally:
            if redirect is not None:
                redirect.close()
                await redirect.wait_closed()

    asyncio.run(run())
