"""POST /v1/vector_stores/{vector_store_id}/chat/completions: questions about a vector store's documents, answered
with the passages they came from (a schulki extension in the shape of OpenAI's chat completions).

The body is a chat completion's: ``model`` (``schulki-chat`` or a model ``GET /v1/models`` lists), ``messages``
(the last one the question, the user and assistant messages before it the conversation it follows, system
messages instructions), ``max_tokens``, ``temperature``, ``stop``, ``seed``, ``stream``. The store is named by the
path, so any OpenAI client asks about it once its base URL ends in the store::

    client = openai.OpenAI(base_url="https://HOST:7860/v1/vector_stores/vs_u-12", api_key=KEY)
    answer = client.chat.completions.create(model="schulki-chat", messages=[{"role": "user", "content": "…"}])
    answer.citations  # the passages the model was given, [1] first, with file, page and text

The answer is a ``chat.completion`` with two more fields: ``citations`` (the passages, numbered as the prompt
numbers them) and ``search_query`` (what was searched: the question with the user's earlier questions). Streamed,
the first chunk carries them, then the answer comes piece by piece, then ``[DONE]``; a client that disconnects
stops the answer. Errors, all before a stream starts: a store of someone else 404 (as every vector store route),
a question that does not fit the model's context 400 (``context_length_exceeded``), a model that does not exist
404, one the user may not use 403. The work, quota and role checks are ``Gateway.ask_documents``'s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from schulki.gateway.api import chat_options
from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.errors import ApiError, streamed_error_body
from schulki.gateway.api.responses import AssistantMessage, ChatCompletion, Choice, Usage
from schulki.gateway.api.schemas import ChatCompletionRequest
from schulki.gateway.api.sse import DONE, event_stream, sse_event
from schulki.gateway.api.vector_store_files import DOCUMENT_PREFIX, STORE_ID
from schulki.gateway.documents.questions import AnswerEvent, Cited, DocumentQuestion, Finished, Piece, Turn

router = APIRouter(prefix="/v1")


# -- the body and the answer ---------------------------------------------------------------------------------------------


class DocumentChatRequest(ChatCompletionRequest):
    """A chat completion's body whose last message is the user's question about the store's documents."""

    @field_validator(*chat_options.OUTPUT_FIELDS)
    @classmethod
    def _not_passed_on(cls, value: Any, info: ValidationInfo) -> Any:
        # The answer is written from the passages with the chat's own sampling: these would be dropped, so they are refused.
        return chat_options.not_here(value, info)

    @model_validator(mode="after")
    def _ends_with_a_question(self) -> DocumentChatRequest:
        if self.messages[-1].role != "user":
            raise ValueError("The last message must be the user's question (role user).")
        return self

    def question(self, workspace: str) -> DocumentQuestion:
        """The question for ``Gateway.ask_documents``: the last message, the conversation before it, and the system messages."""
        prompt = self.prompt()
        history = tuple(Turn(m["role"], m["content"]) for m in prompt[:-1] if m["role"] in ("user", "assistant"))  # type: ignore[arg-type]
        return DocumentQuestion(
            workspace=workspace,
            question=prompt[-1]["content"],
            history=history,
            model=self.model,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            stop=tuple(self.stop_sequences()),
            seed=self.seed,
            instructions="\n\n".join(m["content"] for m in prompt[:-1] if m["role"] == "system"),
        )


class Citation(BaseModel):
    """A passage the answer was written from, numbered as in the prompt ("[1: biologie.pdf, S. 2]")."""

    index: int
    file_id: str
    """The vector store file it belongs to (``doc-<document id>`` for a document uploaded in the Dokumente tab)."""
    filename: str
    document_id: str
    page: int | None
    section: str | None
    chunk_index: int
    score: float
    text: str


class DocumentChatCompletion(ChatCompletion):
    """The whole answer: OpenAI's chat completion, with the passages it cites and the search query."""

    citations: list[Citation]
    search_query: str


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class DocumentChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer; the first carries citations and search_query, the last usage (when asked)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    citations: list[Citation] | None = None
    search_query: str | None = None
    usage: Usage | None = None

    def event(self) -> bytes:
        """The chunk as a server-sent event; the fields only some chunks have are left out of the others."""
        optional = {name for name in ("citations", "search_query", "usage") if getattr(self, name) is None}
        return sse_event(self.model_dump(mode="json", exclude=optional))


# -- the route -------------------------------------------------------------------------------------------------------------


def _not_found(vector_store_id: str) -> ApiError:
    return ApiError(404, f"No vector store with id {vector_store_id!r} found.", "not_found_error", code="vector_store_not_found")


async def _cited(events: AsyncIterator[AnswerEvent]) -> Cited:
    """The first event; every check (store, model, quota, length) and the model's first piece come before it, and a
    refusal among them is answered by the installed handler from the error table (``gateway/errors.py``)."""
    first = await anext(events, None)
    if first is None:
        raise ApiError(502, "The answer ended without a result.", "server_error")
    assert isinstance(first, Cited), "answer_question begins with Cited"
    return first


def _citations(gateway: GatewayDep, workspace: str, cited: Cited) -> list[Citation]:
    file_ids = {record.document_id: record.file_id for record in gateway.stores.files(workspace) if record.document_id}
    return [
        Citation(
            index=p.number,
            file_id=file_ids.get(p.document_id, DOCUMENT_PREFIX + p.document_id),
            filename=p.source,
            document_id=p.document_id,
            page=p.page or None,
            section=p.section or None,
            chunk_index=p.chunk_index,
            score=p.score,
            text=p.text,
        )
        for p in cited.passages
    ]


@router.post(
    "/vector_stores/{vector_store_id}/chat/completions",
    response_model=DocumentChatCompletion,
    responses={200: {"content": {"text/event-stream": {"schema": DocumentChatCompletionChunk.model_json_schema()}}}},
)
async def document_chat_completions(vector_store_id: str, body: DocumentChatRequest, account: AccountDep, gateway: GatewayDep) -> Any:
    """Answer the last message from the store's documents; JSON, or server-sent chunks with ``"stream": true``."""
    match = STORE_ID.match(vector_store_id)
    if match is None:
        raise _not_found(vector_store_id)
    events = gateway.ask_documents(account, body.question(match.group(1)))
    cited = await _cited(events)
    head = DocumentChatCompletionChunk(id=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=cited.model, choices=[])
    citations = _citations(gateway, match.group(1), cited)
    if body.stream:
        return event_stream(_stream(events, head, citations, cited.query, body.include_usage))
    return await _complete(events, head, citations, cited.query)


async def _complete(
    events: AsyncIterator[AnswerEvent], head: DocumentChatCompletionChunk, citations: list[Citation], query: str
) -> DocumentChatCompletion:
    pieces: list[str] = []
    finished = Finished("stop", 0, 0)
    async for event in events:
        if isinstance(event, Piece):
            pieces.append(event.text)
        elif isinstance(event, Finished):
            finished = event
    usage = Usage(
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        total_tokens=finished.prompt_tokens + finished.completion_tokens,
    )
    choice = Choice(message=AssistantMessage(content="".join(pieces)), finish_reason=finished.reason)
    return DocumentChatCompletion(
        id=head.id, created=head.created, model=head.model, choices=[choice], usage=usage, citations=citations, search_query=query
    )


async def _stream(
    events: AsyncGenerator[AnswerEvent, None],
    head: DocumentChatCompletionChunk,
    citations: list[Citation],
    query: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The chunks: role, citations and query first, the pieces, the finish, usage when asked; errors go into the stream."""

    def chunk(delta: ChunkDelta | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish)]
        return head.model_copy(update={"choices": choices, **extra}).event()

    try:
        yield chunk(ChunkDelta(role="assistant", content=""), citations=citations, search_query=query)
        async for event in events:
            if isinstance(event, Piece):
                yield chunk(ChunkDelta(content=event.text))
            elif isinstance(event, Finished):
                yield chunk(ChunkDelta(), event.reason)
                if include_usage:
                    total = event.prompt_tokens + event.completion_tokens
                    yield chunk(
                        None, usage=Usage(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens, total_tokens=total)
                    )
    except Exception as error:  # the status line is sent already: the error goes into the stream, as the chat's does
        yield sse_event(streamed_error_body(error))
    finally:
        await events.aclose()  # a client that left: the model's answer is cancelled, its unused tokens given back
    yield DONE
