"""GET /v1/models, POST /v1/chat/completions and POST /v1/embeddings."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from schulki.gateway.accounts import Account
from schulki.gateway.api.errors import ApiError, from_exception
from schulki.gateway.chat_models import ALIAS, ModelChoiceError
from schulki.gateway.clients import ServiceDown
from schulki.gateway.context import Gateway
from schulki.inference.v1 import inference_service_pb2 as inference_pb

FINISH_REASONS = {inference_pb.FINISH_REASON_STOP: "stop", inference_pb.FINISH_REASON_LENGTH: "length"}
ROLES = {"system", "user", "assistant", "developer"}
CHAT_ALIAS = ALIAS
EMBEDDINGS_ALIAS = "schulki-embeddings"
WHISPER_ALIAS = "whisper-1"
MODELS_CREATED = 1767225600
"""The ``created`` time /v1/models gives every model (2026-01-01): a fixed value keeps the list the same from call to call."""


def api_account(gateway: Gateway):
    def dependency(request: Request) -> Account:
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

    return dependency


async def json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _text_of(content, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text is supported
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(400, "Only text content parts are supported.", param=f"messages[{index}].content")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ApiError(400, "content must be a string or a list of text parts.", param=f"messages[{index}].content")


def parse_messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list.", param="messages")
    parsed = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, "Each message needs a role: system, user or assistant.", param=f"messages[{index}].role")
        role = "system" if message["role"] == "developer" else message["role"]
        parsed.append({"role": role, "content": _text_of(message.get("content", ""), index)})
    return parsed


def _number(body: dict, name: str, kind, low, high):
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not float(value).is_integer())
        or not low <= value <= high
    ):
        raise ApiError(400, f"{name} must be a number from {low} to {high}.", param=name)
    return kind(value)


def router(gateway: Gateway) -> APIRouter:
    routes = APIRouter(prefix="/v1")
    account_of = api_account(gateway)

    def chat_model(account: Account, requested: str) -> str:
        """The model a request goes to; 404 for a model that does not exist here, 403 for one the user may not use."""
        try:
            return gateway.models.resolve(account, requested)
        except ServiceDown as error:
            raise from_exception(error) from None
        except ModelChoiceError as error:
            if error.unknown:
                raise ApiError(
                    404,
                    f"The model {requested!r} does not exist here; GET /v1/models lists the models.",
                    "invalid_request_error",
                    param="model",
                    code="model_not_found",
                ) from None
            raise ApiError(
                403, f"{error} GET /v1/models lists the models you may use.", "permission_error", param="model", code="model_not_allowed"
            ) from None

    @routes.get("/models")
    async def models(account: Account = Depends(account_of)):
        # The alias first, then every chat model this user may use in name order: the same list on every call,
        # whichever nodes are up (a model stays listed while its nodes restart).
        names = [CHAT_ALIAS, *gateway.models.allowed(account), EMBEDDINGS_ALIAS, WHISPER_ALIAS]
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": MODELS_CREATED, "owned_by": "schulki"} for name in names],
        }

    @routes.post("/chat/completions")
    async def chat_completions(request: Request, account: Account = Depends(account_of)):
        body = await json_body(request)
        messages = parse_messages(body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "model is required.", param="model")
        served_model = chat_model(account, model)
        max_tokens = _number(body, "max_completion_tokens", int, 1, 1 << 20) or _number(body, "max_tokens", int, 1, 1 << 20)
        temperature = _number(body, "temperature", float, 0, 2)
        seed = _number(body, "seed", int, 0, 2**32 - 1)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, "stop must be a string or a list of strings.", param="stop")
        if (body.get("n") or 1) != 1:
            raise ApiError(400, "Only n=1 is supported.", param="n")
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        try:
            events = gateway.chat(
                account, messages, max_tokens or gateway.config.gateway.max_chat_tokens, temperature, stop, seed, model=served_model
            )
            first = await anext(events)  # a bad request fails here, with a proper status, before the stream is committed
        except StopAsyncIteration:
            raise ApiError(502, "The inference service ended the answer without a result.", "server_error") from None
        except Exception as error:
            raise from_exception(error) from error
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        # The answer names the model that wrote it (also for schulki-chat), as OpenAI answers with the dated model name.
        if not stream:
            return await _complete(gateway, account, first, events, completion_id, created, served_model)
        return StreamingResponse(
            _sse(gateway, account, first, events, completion_id, created, served_model, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @routes.post("/embeddings")
    async def embeddings(request: Request, account: Account = Depends(account_of)):
        body = await json_body(request)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "input must be a string or a non-empty list of strings (token arrays are not supported).", param="input")
        if body.get("model") not in (EMBEDDINGS_ALIAS, None):
            try:
                known = await gateway.services.embeddings_model_name()
            except Exception as error:
                raise from_exception(error) from error
            if body.get("model") != known:
                raise ApiError(
                    404,
                    f"The model {body.get('model')!r} does not exist here; use {EMBEDDINGS_ALIAS!r}.",
                    param="model",
                    code="model_not_found",
                )
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be float or base64.", param="encoding_format")
        try:
            gateway.quotas.admit(account)
            response = await gateway.services.embed(texts, gateway.pseudonym(account))
        except Exception as error:
            raise from_exception(error) from error
        tokens = sum(e.token_count for e in response.embeddings)
        gateway.quotas.add_tokens(account, tokens)
        data = []
        for index, embedding in enumerate(response.embeddings):
            values = list(embedding.values)
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if encoding == "base64" else values
            data.append({"object": "embedding", "index": index, "embedding": vector})
        return {
            "object": "list",
            "data": data,
            "model": body.get("model") or EMBEDDINGS_ALIAS,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return routes


async def _complete(
    gateway: Gateway, account: Account, first, events: AsyncIterator, completion_id: str, created: int, model: str
) -> JSONResponse:
    pieces, finish = [], None
    try:
        event = first
        while True:
            if event.HasField("finish"):
                finish = event.finish
            else:
                pieces.append(event.text)
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except (grpc.RpcError, Exception) as error:
        raise from_exception(error) from error
    usage = finish.usage if finish else inference_pb.Usage()  # the quota was settled by gateway.chat
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "finish_reason": FINISH_REASONS.get(finish.reason, "stop") if finish else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }
    )


async def _sse(
    gateway: Gateway, account: Account, first, events: AsyncIterator, completion_id: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    def chunk(delta: dict, finish_reason: str | None = None, **extra) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    event = first
    try:
        while True:
            if event.HasField("finish"):
                usage = event.finish.usage  # the quota was settled by gateway.chat
                yield chunk({}, FINISH_REASONS.get(event.finish.reason, "stop"))
                if include_usage:
                    payload = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.total_tokens,
                        },
                    }
                    yield f"data: {json.dumps(payload)}\n\n".encode()
            else:
                yield chunk({"content": event.text})
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except Exception as error:  # the status line is sent already: the error goes into the stream, as OpenAI does
        try:
            body = from_exception(error).body()
        except Exception:
            body = {"error": {"message": "The answer broke off.", "type": "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(body)}\n\n".encode()
    yield b"data: [DONE]\n\n"
