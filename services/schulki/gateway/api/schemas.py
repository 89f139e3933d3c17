"""Typed request bodies of the OpenAI routes, as llama-cpp-python's server, vLLM and speaches declare theirs.

A field with a wrong type or value is answered with OpenAI's 400 naming it
(``api/errors.py`` turns the validation error into that shape). Fields schulki
does not know are accepted, as OpenAI's clients send many, and their names (not
their values) are logged, so a client that relies on one is noticed.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schulki.gateway.api import chat_options, chat_tools
from schulki.gateway.api.errors import from_validation_errors
from schulki.inference.v1 import inference_service_pb2 as inference_pb

log = logging.getLogger(__name__)

MAX_STORE_NAME = 80
MAX_RESULTS = 50
"""Most search results one vector store search gives."""


def _a_number(value: Any) -> Any:
    # JSON true and "0.5" are not numbers; pydantic's lax mode would take them.
    if isinstance(value, (bool, str)):
        raise ValueError("must be a number")
    return value


Number = BeforeValidator(_a_number)


class OpenAIRequest(BaseModel):
    """A request body: unknown fields are kept aside and their names logged."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown_fields(self) -> OpenAIRequest:
        if self.model_extra:
            log.info("%s: fields schulki ignores: %s", type(self).__name__, ", ".join(sorted(self.model_extra)))
        return self


def _unsupported(name: str) -> PydanticCustomError:
    return PydanticCustomError("unsupported_parameter", f"schulki does not support {name}; leave it out.")


def _not_sent(value: Any, info: ValidationInfo) -> Any:
    """OpenAI features schulki does not have are refused plainly instead of being ignored without a word."""
    if value is not None:
        raise _unsupported(str(info.field_name))
    return value


def _auto_chunking(value: Any, info: ValidationInfo) -> Any:
    if value is None or (isinstance(value, dict) and value.get("type") == "auto"):
        return value
    raise _unsupported(str(info.field_name))


NotSupported = Annotated[Any, AfterValidator(_not_sent)]
AutoChunking = Annotated[Any, AfterValidator(_auto_chunking)]


def refused(message: str) -> PydanticCustomError:
    """A field's error answered with ``message`` as it is (``errors.from_validation_errors``)."""
    return PydanticCustomError("refused", message)


class CalledFunction(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=1 << 20)
    """The arguments as a JSON object's text, as the answer gave them."""

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, arguments: str) -> str:
        try:
            if isinstance(json.loads(arguments or "{}"), dict):
                return arguments
        except ValueError:
            pass
        raise ValueError("arguments must be the text of a JSON object")


class CalledTool(BaseModel):
    """One tool call of an earlier assistant message, as the answer gave it."""

    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    """One message; content is text or a list of text parts (images and audio are not supported). An assistant
    message may carry the tool calls it made, a tool message the result of one (tool_call_id names the call)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = ""
    tool_calls: list[CalledTool] | None = None
    tool_call_id: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=64)

    @field_validator("content")
    @classmethod
    def _only_text_parts(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(content, list) and any(part.get("type") != "text" for part in content):
            raise ValueError("Only text content parts are supported.")
        return content

    def as_prompt(self) -> dict[str, str]:
        """{role, content} as the inference service takes it: developer is system, text parts joined; a call's or a
        tool result's fields beside them (``tool_calls`` as JSON text, read by the inference client)."""
        content = self.content if isinstance(self.content, str) else "".join(str(part.get("text", "")) for part in self.content or [])
        prompt = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in self.tool_calls]
            prompt["tool_calls"] = json.dumps(calls, ensure_ascii=False)
        if self.role == "tool":
            prompt["tool_call_id"] = self.tool_call_id or ""
            prompt["name"] = self.name or ""
        return prompt


class ChatCompletionRequest(OpenAIRequest):
    """POST /v1/chat/completions: every field of OpenAI's request either works or is refused with a 400 naming it
    (chat_options.py says which and why; a test walks the official client's request type)."""

    messages: list[ChatMessage] = Field(min_length=1)
    # tools before tool_choice: the choice's check reads the tools
    tools: chat_tools.Tools = None
    tool_choice: chat_tools.ToolChoice = None
    parallel_tool_calls: bool | None = None
    model: str = Field(min_length=1)
    max_completion_tokens: Annotated[int | None, Number, Field(ge=1, le=1 << 20)] = None
    max_tokens: Annotated[int | None, Number, Field(ge=1, le=1 << 20)] = None
    temperature: Annotated[float | None, Number, Field(ge=0, le=2)] = None
    seed: Annotated[int | None, Number, Field(ge=0, le=2**32 - 1)] = None
    stop: str | list[str] | None = None
    n: Annotated[int | None, Number] = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    top_p: Annotated[float | None, Number, Field(gt=0, le=1)] = None
    presence_penalty: Annotated[float | None, Number, Field(ge=-2, le=2)] = None
    frequency_penalty: Annotated[float | None, Number, Field(ge=-2, le=2)] = None
    logit_bias: chat_options.LogitBias = None
    response_format: chat_options.ResponseFormat = None
    # llama.cpp's own sampling fields, which its clients send in the body beside OpenAI's
    top_k: Annotated[int | None, Number, Field(ge=0, le=1000)] = None
    min_p: Annotated[float | None, Number, Field(ge=0, le=1)] = None
    repeat_penalty: Annotated[float | None, Number, Field(gt=0, le=10)] = None
    # accepted where the value asks for what schulki does anyway, refused otherwise (chat_options.py)
    store: chat_options.OnlyFalse = None
    service_tier: chat_options.DefaultTier = None
    modalities: chat_options.TextOnly = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # OpenAI features schulki does not have
    audio: NotSupported = None
    function_call: NotSupported = None
    functions: NotSupported = None
    metadata: NotSupported = None
    moderation: NotSupported = None
    prediction: NotSupported = None
    prompt_cache_options: NotSupported = None
    prompt_cache_retention: NotSupported = None
    reasoning_effort: NotSupported = None
    verbosity: NotSupported = None
    web_search_options: NotSupported = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int | None, Number, Field(ge=0, le=20)] = None

    @field_validator("messages")
    @classmethod
    def _tool_results_answer_calls(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        chat_tools.check_tool_messages(messages)
        return messages

    @field_validator("tool_choice")
    @classmethod
    def _choice_of_the_tools(cls, choice: tuple[int, str] | None, info: ValidationInfo) -> tuple[int, str] | None:
        chat_tools.check_choice(info.data.get("tools"), choice)
        return choice

    @field_validator("n")
    @classmethod
    def _one_answer(cls, n: int | None) -> int | None:
        if (n or 1) != 1:
            raise ValueError("Only n=1 is supported.")
        return n

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise PydanticCustomError("invalid_value", "top_logprobs needs logprobs set to true.")
        return self

    def prompt(self) -> list[dict[str, str]]:
        return [message.as_prompt() for message in self.messages]

    def logprob_alternatives(self) -> int | None:
        """None when the answer comes without log-probabilities, else how many alternatives each token gets."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def inference_options(self) -> inference_pb.ChatRequest:
        """The sampling and output fields as a partial ChatRequest, merged into the one sent to the inference service."""
        options = inference_pb.ChatRequest()
        for name in chat_options.SAMPLING_FIELDS:
            if getattr(self, name) is not None:
                setattr(options.sampling, name, getattr(self, name))
        for token, bias in (self.logit_bias or {}).items():
            options.sampling.logit_bias[token] = bias
        if self.response_format is not None:
            options.json_schema = self.response_format
        options.tools.extend(self.tools or [])
        if self.tool_choice is not None:
            options.tool_choice, options.tool_choice_function = self.tool_choice
        if self.parallel_tool_calls is not None:
            options.parallel_tool_calls = self.parallel_tool_calls
        return options


class EmbeddingsRequest(OpenAIRequest):
    """POST /v1/embeddings (token arrays are not supported)."""

    input: str | Annotated[list[str], Field(min_length=1)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class DocumentRequest(OpenAIRequest):
    """POST /v1/documents/summarize and /v1/documents/translate: one stored document of a workspace."""

    # Names and choices are short: a 100,000-character id is refused here, not sent on to the services or echoed back.
    workspace: str = Field(min_length=1, max_length=200)
    document_id: str = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    stream: bool = False


class SummarizeRequest(DocumentRequest):
    length: str = Field(default="paragraph", min_length=1, max_length=40)


class TranslateRequest(DocumentRequest):
    language: str = Field(min_length=1, max_length=40)
    format: str = Field(default="md", max_length=40)


class TranscriptionForm(OpenAIRequest):
    """The form fields of POST /v1/audio/transcriptions besides the file."""

    model: str | None = None
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] | None = None
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None


class TranscriptionUpload(TranscriptionForm):
    """The whole form of POST /v1/audio/transcriptions, as the OpenAPI document describes it (the route reads the form
    itself, with the gateway's own limits, and checks the fields besides the file with TranscriptionForm)."""

    file: bytes = Field(json_schema_extra={"format": "binary"})


class FileUpload(BaseModel):
    """The form of POST /v1/files, as the OpenAPI document describes it (the route reads and checks it itself, streaming
    the file to disk within the user's upload quota)."""

    file: bytes = Field(json_schema_extra={"format": "binary"})
    purpose: Literal["assistants", "user_data"]


def parse_form(model: type[TranscriptionForm], fields: dict[str, Any]) -> TranscriptionForm:
    """A form (read with the gateway's own limits) checked against its model; OpenAI's 400 for a wrong field."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        raise from_validation_errors(error.errors()) from None


class CreateVectorStoreRequest(OpenAIRequest):
    """POST /v1/vector_stores: a new store, with the user's uploads to add at once."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    expires_after: NotSupported = None
    chunking_strategy: AutoChunking = None
    name: str = "Dokumente"
    file_ids: list[str] = Field(default_factory=list)

    @field_validator("name", mode="before")
    @classmethod
    def _short_text(cls, name: Any) -> str:
        name = name or "Dokumente"
        if not isinstance(name, str) or len(name) > MAX_STORE_NAME:
            raise refused(f"name must be a text of at most {MAX_STORE_NAME} characters.")
        return name

    @field_validator("file_ids", mode="before")
    @classmethod
    def _file_ids(cls, file_ids: Any) -> list[str]:
        file_ids = file_ids or []
        if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
            raise refused("file_ids must be a list of file ids.")
        return file_ids


class CreateStoreFileRequest(OpenAIRequest):
    """POST /v1/vector_stores/{id}/files: an upload's file_id, or (a schulki extension) the url of a web page."""

    attributes: NotSupported = None
    chunking_strategy: AutoChunking = None
    file_id: str | None = None
    url: str | None = None


class SearchRequest(OpenAIRequest):
    """POST /v1/vector_stores/{id}/search."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    filters: NotSupported = None
    query: str = ""
    max_num_results: int = 10

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, query: Any) -> str:
        if isinstance(query, list) and query and all(isinstance(q, str) for q in query):
            query = " ".join(query)
        if not isinstance(query, str) or not query.strip():
            raise refused("query must be a non-empty text.")
        return query

    @field_validator("max_num_results", mode="before")
    @classmethod
    def _count(cls, count: Any) -> int:
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_RESULTS:
            raise refused(f"max_num_results must be a whole number from 1 to {MAX_RESULTS}.")
        return count
