"""GET /v1/models, POST /v1/chat/completions and POST /v1/embeddings."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.errors import ApiError, streamed_error_body
from schulki.gateway.api.responses import (
    AssistantMessage,
    CalledFunction,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    Embedding,
    EmbeddingList,
    EmbeddingUsage,
    FunctionDelta,
    ModelCard,
    ModelList,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from schulki.gateway.api.schemas import ChatCompletionRequest, EmbeddingsRequest
from schulki.gateway.api.sse import DONE, TextEvents, event_stream, sse_event
from schulki.gateway.context import ModelAnswer
from schulki.gateway.nodes.chat_models import ALIAS
from schulki.inference.v1 import inference_service_pb2 as inference_pb

FINISH_REASONS = {
    inference_pb.FINISH_REASON_STOP: "stop",
    inference_pb.FINISH_REASON_LENGTH: "length",
    inference_pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}
CHAT_ALIAS = ALIAS
EMBEDDINGS_ALIAS = "schulki-embeddings"
WHISPER_ALIAS = "whisper-1"
MODELS_CREATED = 1767225600
"""The ``created`` time /v1/models gives every model (2026-01-01): a fixed value keeps the list the same from call to call."""


router = APIRouter(prefix="/v1")


@router.get("/models")
async def models(gateway: GatewayDep, account: AccountDep) -> ModelList:
    # The alias first, then every chat model this user may use in name order: the same list on every call,
    # whichever nodes are up (a model stays listed while its nodes restart).
    names = [CHAT_ALIAS, *gateway.models.allowed(account), EMBEDDINGS_ALIAS, WHISPER_ALIAS]
    return ModelList(data=[ModelCard(id=name, created=MODELS_CREATED) for name in names])


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, gateway: GatewayDep, account: AccountDep) -> ChatCompletion | StreamingResponse:
    """The answer as one body, or with ``stream`` as server-sent ChatCompletionChunk events and ``[DONE]``."""
    max_tokens = body.max_completion_tokens or body.max_tokens or gateway.config.gateway.max_chat_tokens
    # ModelChoiceError (404 or 403 by the error table) for a model that does not exist here or that the user may not use
    events = gateway.chat(
        account,
        body.prompt(),
        max_tokens,
        body.temperature,
        body.stop_sequences(),
        body.seed,
        model=body.model,
        options=body.inference_options(),
        logprobs=body.logprob_alternatives(),
    )
    served_model = events.model
    try:
        first = await anext(events)  # a bad request fails here, with a proper status, before the stream is committed
    except StopAsyncIteration:
        raise ApiError(502, "The inference service ended the answer without a result.", "server_error") from None
    # The answer names the model that wrote it (also for schulki-chat), as OpenAI answers with the dated model name.
    chunk = ChatCompletionChunk(id=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=served_model, choices=[])
    if not body.stream:
        return await _complete(first, events, chunk)
    return event_stream(_stream(first, events, chunk, body.include_usage))


def _finish_reason(events: AsyncIterator[inference_pb.ChatResponse], finish: inference_pb.ChatFinish) -> str:
    """OpenAI's finish reason; ``content_filter`` where moderation replaced the answer by a fixed one."""
    if isinstance(events, ModelAnswer) and events.filtered:
        return "content_filter"
    return FINISH_REASONS.get(finish.reason, "stop")


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, gateway: GatewayDep, account: AccountDep) -> EmbeddingList:
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
        data.append(Embedding(index=index, embedding=vector))
    return EmbeddingList(data=data, model=body.model or EMBEDDINGS_ALIAS, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def _usage(usage: inference_pb.Usage) -> Usage:
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens)


def _top(choice: inference_pb.TokenChoice) -> TopLogprob:
    return TopLogprob(token=choice.piece.decode("utf-8", errors="replace"), logprob=choice.logprob, bytes=list(choice.piece))


def _token_logprob(token: inference_pb.TokenLogprob) -> TokenLogprob:
    chosen = _top(token.chosen)
    return TokenLogprob(**chosen.model_dump(), top_logprobs=[_top(c) for c in token.alternatives])


async def _complete(
    first: inference_pb.ChatResponse, events: AsyncIterator[inference_pb.ChatResponse], chunk: ChatCompletionChunk
) -> ChatCompletion:
    pieces, finish = [], None
    tokens: list[TokenLogprob] = []
    calls: list[ToolCall] = []
    asked = first.HasField("token")  # a request with logprobs gets a token event before every piece of text
    event = first
    while True:
        if event.HasField("finish"):
            finish = event.finish
        elif event.HasField("token"):
            tokens.append(_token_logprob(event.token))
        elif event.HasField("tool_call"):
            call = event.tool_call
            calls.append(ToolCall(id=call.id, function=CalledFunction(name=call.name, arguments=call.arguments)))
        else:
            pieces.append(event.text)
        try:
            event = await anext(events)
        except StopAsyncIteration:
            break
    usage = finish.usage if finish else inference_pb.Usage()  # the quota was settled by gateway.chat
    reason = _finish_reason(events, finish) if finish else "stop"
    if isinstance(events, ModelAnswer) and events.filtered:
        pieces = (
            [pieces[-1].strip()] if pieces else pieces
        )  # the fixed answer alone, without the part of the model's that went before the cut
    return ChatCompletion(
        id=chunk.id,
        created=chunk.created,
        model=chunk.model,
        choices=[
            Choice(
                message=AssistantMessage(content="".join(pieces) or None, tool_calls=calls)
                if calls
                else AssistantMessage(content="".join(pieces)),
                logprobs=ChoiceLogprobs(content=tokens) if asked or tokens else None,
                finish_reason=reason,
            )
        ],
        usage=_usage(usage),
    )


async def _stream(
    first: inference_pb.ChatResponse, events: AsyncIterator[inference_pb.ChatResponse], chunk: ChatCompletionChunk, include_usage: bool
) -> AsyncIterator[bytes]:
    tokens: list[TokenLogprob] = []  # the log-probabilities of the tokens whose text the next piece carries

    def piece(delta: Delta, finish_reason: str | None = None) -> bytes:
        logprobs = ChoiceLogprobs(content=list(tokens)) if tokens else None
        tokens.clear()
        return sse_event(chunk.model_copy(update={"choices": [ChunkChoice(delta=delta, logprobs=logprobs, finish_reason=finish_reason)]}))

    # a piece of text without log-probabilities, the most frequent event by far: its frame is dumped once per answer
    text_event = TextEvents(lambda text: chunk.model_copy(update={"choices": [ChunkChoice(delta=Delta(content=text))]}))
    yield piece(Delta(role="assistant", content=""))
    calls = 0  # tool calls sent so far: the next one's index
    event = first
    try:
        while True:
            if event.HasField("token"):
                tokens.append(_token_logprob(event.token))
            elif event.HasField("tool_call"):
                # A call arrives whole (the service reads it once its arguments are complete): its head, then its arguments.
                call, index = event.tool_call, calls
                head = ToolCallDelta(index=index, id=call.id, type="function", function=FunctionDelta(name=call.name, arguments=""))
                yield piece(Delta(tool_calls=[head]))
                yield piece(Delta(tool_calls=[ToolCallDelta(index=index, function=FunctionDelta(arguments=call.arguments))]))
                calls += 1
            elif event.HasField("finish"):
                if tokens:  # tokens whose text a stop string held back, or an end-of-turn token
                    yield piece(Delta())
                yield piece(Delta(), _finish_reason(events, event.finish))
                if include_usage:  # the quota was settled by gateway.chat
                    yield sse_event(chunk.model_copy(update={"usage": _usage(event.finish.usage)}))
            elif tokens:
                yield piece(Delta(content=event.text))
            else:
                yield text_event(event.text)
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except Exception as error:  # the status line is sent already: the error goes into the stream, as OpenAI does
        yield sse_event(streamed_error_body(error))
    yield DONE
