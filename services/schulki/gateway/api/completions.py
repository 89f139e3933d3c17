"""POST /v1/completions (OpenAI's text completions) and POST /v1/infill (llama.cpp server's /infill) for code editors.

Both go through ``Gateway.complete`` (one request and a token reservation per
call) to the inference service's ``Complete``: a raw prompt, no chat template.
A ``suffix`` on /v1/completions, and every /v1/infill, fill the gap between the
text before and after the cursor in the model's fill-in-the-middle format,
which only code models have; a chat model answers them with a 400 that says so.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from schulki.gateway.api.chat import FINISH_REASONS
from schulki.gateway.api.completion_logprobs import LegacyLogprobs
from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.editor_schemas import (
    CompletionChoice,
    CompletionRequest,
    InfillRequest,
    InfillResult,
    InfillTimings,
    TextCompletion,
)
from schulki.gateway.api.errors import ApiError, streamed_error_body
from schulki.gateway.api.responses import Usage
from schulki.gateway.api.sse import DONE, event_stream, sse_event
from schulki.inference.v1 import inference_service_pb2 as inference_pb

OPENAI_DEFAULT_MAX_TOKENS = 16
"""OpenAI's /v1/completions writes 16 tokens when max_tokens is not given; schulki does the same."""

router = APIRouter(prefix="/v1")
Events = AsyncIterator[inference_pb.CompleteResponse]


async def _first(events: Events) -> inference_pb.CompleteResponse:
    """The first event: a bad request fails here, with its proper status, before an answer or stream is committed."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise ApiError(502, "The inference service ended the answer without a result.", "server_error") from None


def _sampling(temperature: float | None, top_p: float | None, seed: int | None, top_k: int | None = None) -> inference_pb.SamplingOptions:
    options = inference_pb.SamplingOptions()
    if temperature is not None:
        options.temperature = temperature
    if top_p is not None:
        options.top_p = top_p
    if top_k is not None:
        options.top_k = top_k
    if seed is not None:
        options.seed = seed
    return options


@router.post("/completions", response_model=TextCompletion)
async def completions(body: CompletionRequest, gateway: GatewayDep, account: AccountDep) -> TextCompletion | StreamingResponse:
    """The continuation of ``prompt`` as one body, or with ``stream`` as server-sent TextCompletion events and ``[DONE]``;
    with ``echo`` the prompt comes first. With ``suffix`` a code model fills the gap between prompt and suffix.
    ``logprobs`` gives each token's log-probability in OpenAI's legacy shape; with ``echo`` the prompt's tokens too
    (``max_tokens`` 0 then scores a text alone: its perplexity, as ScoreText and ``schulki eval`` compute it)."""
    if body.echo and body.suffix is not None:
        raise ApiError(400, "echo and suffix cannot be combined: a filled gap has no single prompt to echo.", param="echo")
    if body.logprobs is not None and body.suffix is not None:
        raise ApiError(400, "logprobs and suffix cannot be combined on schulki: a filled gap gives its text only.", param="logprobs")
    request = inference_pb.CompleteRequest(
        max_tokens=OPENAI_DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens,
        sampling=_sampling(body.temperature, body.top_p, body.seed),
        stop_sequences=body.stop_sequences(),
    )
    if body.logprobs is not None:
        request.logprobs = body.logprobs
        request.prompt_logprobs = bool(body.echo)  # echo scores the prompt: a text's perplexity with max_tokens 0
    if body.suffix is not None:
        request.fill_in_the_middle.CopyFrom(inference_pb.FillInTheMiddle(prefix=body.text, suffix=body.suffix))
    else:
        request.prompt = body.text
    # ModelChoiceError (404 or 403 by the error table) for a model that does not exist here or that the user may not use
    events = gateway.complete(account, request, body.model)
    served_model = events.model
    first = await _first(events)
    head = TextCompletion(id=f"cmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=served_model, choices=[])
    echoed = body.text if body.echo else ""
    # Without echo OpenAI counts the offsets of the answer's tokens from the prompt's start.
    logprobs = LegacyLogprobs(start_offset=0 if body.echo else len(body.text)) if body.logprobs is not None else None
    if body.stream:
        return event_stream(_completion_stream(first, events, head, echoed, body.include_usage, logprobs))
    pieces, finish = await _collect(first, events, logprobs)
    reason = FINISH_REASONS.get(finish.reason, "stop")
    choice = CompletionChoice(text=echoed + "".join(pieces), finish_reason=reason, logprobs=logprobs.take() if logprobs else None)
    return head.model_copy(update={"choices": [choice], "usage": _usage(finish.usage)})


@router.post("/infill", response_model=InfillResult)
async def infill(body: InfillRequest, gateway: GatewayDep, account: AccountDep) -> InfillResult | StreamingResponse:
    """llama.cpp server's /infill: the middle between ``input_prefix`` and ``input_suffix`` (after ``input_extra`` files
    and starting with ``prompt``) as ``content``; with ``stream`` as server-sent events, the last with ``stop`` true."""
    wanted = body.max_tokens or body.n_predict
    warm_up = wanted == 0  # read the prompt into the cache only: one token is generated and left out
    request = inference_pb.CompleteRequest(
        prompt=body.prompt,
        fill_in_the_middle=inference_pb.FillInTheMiddle(
            prefix=body.input_prefix,
            suffix=body.input_suffix,
            extra_files=[inference_pb.ExtraFile(file_name=chunk.filename, text=chunk.text) for chunk in body.input_extra],
        ),
        max_tokens=1 if warm_up else (wanted if wanted and wanted > 0 else gateway.config.gateway.max_chat_tokens),
        sampling=_sampling(body.temperature, body.top_p, body.seed, body.top_k),
        stop_sequences=body.stop or [],
    )
    started = time.perf_counter()
    events = gateway.complete(account, request, body.model)
    served_model = events.model
    first = await _first(events)
    first_at = time.perf_counter()
    if body.stream and not warm_up:
        return event_stream(_infill_stream(first, events, served_model, started, first_at))
    pieces, finish = await _collect(first, events)
    return _infill_result("" if warm_up else "".join(pieces), finish, served_model, started, first_at)


def _usage(usage: inference_pb.Usage) -> Usage:
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens)


async def _collect(
    first: inference_pb.CompleteResponse, events: Events, logprobs: LegacyLogprobs | None = None
) -> tuple[list[str], inference_pb.ChatFinish]:
    pieces, finish = [], inference_pb.ChatFinish()
    event = first
    while True:
        if event.HasField("finish"):
            finish = event.finish  # the quota was settled by gateway.complete
        elif event.HasField("text"):
            pieces.append(event.text)
        elif logprobs is not None:
            logprobs.add(event)
        try:
            event = await anext(events)
        except StopAsyncIteration:
            return pieces, finish


async def _completion_stream(
    first: inference_pb.CompleteResponse,
    events: Events,
    head: TextCompletion,
    echoed: str,
    include_usage: bool,
    logprobs: LegacyLogprobs | None = None,
) -> AsyncIterator[bytes]:
    def piece(text: str, finish_reason: str | None = None) -> bytes:
        # Each piece carries the tokens gathered since the last: a token's event comes before the text it adds.
        taken = logprobs.take() if logprobs is not None and not logprobs.empty else None
        choice = CompletionChoice(text=text, finish_reason=finish_reason, logprobs=taken)
        return sse_event(head.model_copy(update={"choices": [choice]}))

    echo_due = bool(echoed)
    event = first
    try:
        while True:
            kind = event.WhichOneof("event")
            if echo_due and kind not in ("unscored", "prompt_token"):
                echo_due = False
                yield piece(echoed)  # with the prompt's scored tokens, which all come before anything else
            if kind == "finish":
                yield piece("", FINISH_REASONS.get(event.finish.reason, "stop"))
                if include_usage:
                    yield sse_event(head.model_copy(update={"usage": _usage(event.finish.usage)}))
            elif kind == "text":
                yield piece(event.text)
            elif logprobs is not None:
                logprobs.add(event)
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except Exception as error:  # the status line is sent already: the error goes into the stream, as OpenAI does
        yield sse_event(streamed_error_body(error))
    yield DONE


def _infill_result(content: str, finish: inference_pb.ChatFinish, model: str, started: float, first_at: float) -> InfillResult:
    ended = time.perf_counter()
    return InfillResult(
        content=content,
        stop=True,
        model=model,
        tokens_predicted=finish.usage.completion_tokens,
        tokens_evaluated=finish.usage.prompt_tokens,
        stop_type="limit" if finish.reason == inference_pb.FINISH_REASON_LENGTH else "eos",
        timings=InfillTimings(
            prompt_n=finish.usage.prompt_tokens,
            prompt_ms=round((first_at - started) * 1000, 3),
            predicted_n=finish.usage.completion_tokens,
            predicted_ms=round((ended - first_at) * 1000, 3),
        ),
    )


async def _infill_stream(
    first: inference_pb.CompleteResponse, events: Events, model: str, started: float, first_at: float
) -> AsyncIterator[bytes]:
    # llama-server streams /infill as plain ``data:`` events and no [DONE]: the event with stop true is the last.
    event = first
    try:
        while True:
            if event.HasField("finish"):
                yield sse_event(_infill_result("", event.finish, model, started, first_at))
            else:
                yield sse_event(InfillResult(content=event.text, stop=False, model=model))
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except Exception as error:
        yield sse_event(streamed_error_body(error))
