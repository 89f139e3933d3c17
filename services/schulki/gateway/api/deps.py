"""What every /v1 route is given: the app's ``Gateway`` and the user of the API key, as FastAPI dependencies.

The routers are made once, at import (``router = APIRouter(...)``), as vLLM's
and speaches' are; the gateway they serve comes from ``app.state.gateway``
(set by ``create_app``), so one process may run several apps (the tests do).
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from schulki.gateway.accounts.database import Account
from schulki.gateway.api.errors import ApiError
from schulki.gateway.context import Gateway


def gateway_of(request: Request) -> Gateway:
    return cast(Gateway, request.app.state.gateway)


GatewayDep = Annotated[Gateway, Depends(gateway_of)]


def api_account(request: Request, gateway: GatewayDep) -> Account:
    """The user of the request's API key (``Authorization: Bearer``); 401 in OpenAI's shape without a known one."""
    header = request.headers.get("authorization", "")
    account = gateway.accounts.by_api_key(header[7:].strip()) if header.lower().startswith("bearer ") else None
    if account is None:
        raise ApiError(
            401,
            "Incorrect API key provided. Find your key in schulki (ask your admin).",
            "invalid_request_error",
            code="invalid_api_key",
        )
    return account


AccountDep = Annotated[Account, Depends(api_account)]
