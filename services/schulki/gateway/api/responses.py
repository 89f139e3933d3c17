"""Typed response bodies of the /v1 routes, in OpenAI's shapes (and schulki's own for whole documents).

Each route returns one of these, so the OpenAPI document at /v1/openapi.json
describes every answer. Fields are written in OpenAI's order and all of them
are sent, ``null`` included, as OpenAI sends them; the few that OpenAI leaves
out when empty (a stream chunk's ``usage``, a delta's ``role``) are ``omitted``.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

Item = TypeVar("Item", bound=BaseModel)


def _is_none(value: object) -> bool:
    return value is None


def omitted() -> Any:
    """A field that is left out of the body while it is None."""
    return Field(default=None, exclude_if=_is_none)


class ListPage(BaseModel, Generic[Item]):
    """OpenAI's body for a whole list in one page (files, vector stores, a store's files)."""

    object: Literal["list"] = "list"
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool = False


def one_page(data: list[Item]) -> dict[str, Any]:
    """The fields of a ListPage holding all of ``data``: ``ListPage[Kind](**one_page(items))``."""
    ids = [getattr(item, "id", None) for item in data]
    return {"data": data, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


# -- models, chat, embeddings ------------------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "schulki"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CalledFunction(BaseModel):
    name: str
    arguments: str
    """The arguments as a JSON object's text."""


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    """The answer's text; null when the answer is tool calls."""
    tool_calls: list[ToolCall] | None = omitted()


class FunctionDelta(BaseModel):
    name: str | None = omitted()
    arguments: str | None = omitted()


class ToolCallDelta(BaseModel):
    """A piece of a streamed tool call: the first of a call carries its id, type and name, the next its arguments."""

    index: int
    id: str | None = omitted()
    type: Literal["function"] | None = omitted()
    function: FunctionDelta


class TopLogprob(BaseModel):
    """One of the most likely tokens at a place of the answer; ``bytes`` holds its exact UTF-8 bytes (a token may hold
    part of a character, whose ``token`` text then shows U+FFFD)."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """A token of the answer with its log-probability and the ``top_logprobs`` most likely tokens at its place."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = omitted()
    content: str | None = omitted()
    tool_calls: list[ToolCallDelta] | None = omitted()


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One event of a streamed chat answer; the last (with ``stream_options.include_usage``) has no choices, only usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = omitted()


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """The vector, or its float32 values base64-encoded (``encoding_format: base64``)."""


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# -- transcription -----------------------------------------------------------------------------------------------------


class Transcription(BaseModel):
    text: str


class TranscriptionSegment(BaseModel):
    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]


# -- whole documents (a schulki extension) -----------------------------------------------------------------------------


class DocumentProgress(BaseModel):
    object: Literal["document.progress"] = "document.progress"
    part: int
    parts: int
    stage: str
    message: str


class DocumentText(BaseModel):
    object: Literal["document.text"] = "document.text"
    text: str


class DocumentSummary(BaseModel):
    object: Literal["document.summary"] = "document.summary"
    source: str
    parts: int
    length: str
    text: str


class TranslatedFile(BaseModel):
    name: str
    format: str
    content_base64: str


class DocumentTranslation(BaseModel):
    object: Literal["document.translation"] = "document.translation"
    source: str
    parts: int
    language: str
    text: str
    file: TranslatedFile


# -- files and vector stores -------------------------------------------------------------------------------------------


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded"] = "uploaded"
    status_details: None = None
    expires_at: None = None


class FileCounts(BaseModel):
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    total: int


class VectorStore(BaseModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["in_progress", "completed"]
    last_active_at: None = None
    metadata: dict[str, str]
    """``kind`` (private, class or store) and ``writable`` ("true" or "false")."""
    expires_after: None = None
    expires_at: None = None


class LastError(BaseModel):
    code: str
    message: str


FileStatus = Literal["in_progress", "completed", "failed", "cancelled"]


class VectorStoreFile(BaseModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    vector_store_id: str
    status: FileStatus
    last_error: LastError | None = None
    usage_bytes: int
    attributes: dict[str, str]
    chunking_strategy: None = None


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, str | int]
    content: list[TextContent]


class SearchResultsPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: None = None
