"""GET /v1/models, POST /v1/chat/completions and POST /v1/embeddings."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from schulki.gateway.accounts import Account
from schulki.gateway.api.errors import ApiError, streamed_error_body
from schulki.gateway.api.schemas import ChatCompletionRequest, EmbeddingsRequest
from schulki.gateway.chat_models import ALIAS, ModelChoiceError
from schulki.gateway.context import Gateway
from schulki.inference.v1 import inference_service_pb2 as inference_pb

FINISH_REASONS = {inference_pb.FINISH_REASON_STOP: "stop", inference_pb.FINISH_REASON_LENGTH: "length"}
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


def router(gateway: Gateway) -> APIRouter:
    routes = APIRouter(prefix="/v1")
    account_of = api_account(gateway)

    def chat_model(account: Account, requested: str) -> str:
        """The model a request goes to; 404 for a model that does not exist here, 403 for one the user may not use
        (ServiceDown, when no chat model is reachable at all, is answered by the app's handler)."""
        try:
            return gateway.models.resolve(account, requested)
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
    async def chat_completions(body: ChatCompletionRequest, account: Account = Depends(account_of)):
        served_model = chat_model(account, body.model)
        max_tokens = body.max_completion_tokens or body.max_tokens or gateway.config.gateway.max_chat_tokens
        events = gateway.chat(account, body.prompt(), max_tokens, body.temperature, body.stop_sequences(), body.seed, model=served_model)
        try:
            first = await anext(events)  # a bad request fails here, with a proper status, before the stream is committed
        except StopAsyncIteration:
            raise ApiError(502, "The inference service ended the answer without a result.", "server_error") from None
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        # The answer names the model that wrote it (also for schulki-chat), as OpenAI answers with the dated model name.
        if not body.stream:
            return await _complete(first, events, completion_id, created, served_model)
        return StreamingResponse(
            _sse(first, events, completion_id, created, served_model, body.include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @routes.post("/embeddings")
    async def embeddings(body: EmbeddingsRequest, account: Account = Depends(account_of)):
        if body.model not in (EMBEDDINGS_ALIAS, None) and body.model != await gateway.embeddings_model_name():
            raise ApiError(
                404, f"The model {body.model!r} does not exist here; use {EMBEDDINGS_ALIAS!r}.", param="model", code="model_not_found"
            )
        response = await gateway.embed(account, body.texts())
        tokens = sum(e.token_count for e in response.embeddings)
        data = []
        for index, embedding in enumerate(response.embeddings):
            values = list(embedding.values)
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if body.encoding_format == "base64" else values
            data.append({"object": "embedding", "index": index, "embedding": vector})
        return {
            "object": "list",
            "data": data,
            "model": body.model or EMBEDDINGS_ALIAS,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return routes


async def _complete(first, events: AsyncIterator, completion_id: str, created: int, model: str) -> JSONResponse:
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


async def _sse(first, events: AsyncIterator, completion_id: str, created: int, model: str, include_usage: bool) -> AsyncIterator[bytes]:
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
        yield f"data: {json.dumps(streamed_error_body(error))}\n\n".encode()
    yield b"data: [DONE]\n\n"
