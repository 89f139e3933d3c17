"""The OpenAI-compatible API under /v1, driven by the official openai client, against the real services."""

from __future__ import annotations

import ssl
import subprocess
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.conftest import ServiceProcess, free_port
from tests.gateway_stack import connect, running_stack, service_log, stack_config

SPEECH = "Guten Morgen. Heute lernen wir etwas über die Photosynthese."
"""Spoken at 140 words a minute: Whisper base (greedy) writes it at temperature 0 in about 1 s; the shorter
"Guten Morgen. Heute lernen wir die Photosynthese." at espeak-ng's default speed went through its whole fallback
ladder (about 5 s), once for each of the response formats."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    config = stack_config(folder)
    config.gateway.requests_per_minute = {"student": 1000, "teacher": 3, "admin": 1000}
    config.gateway.max_upload_bytes = 8 * 1024 * 1024
    with running_stack(folder, services=("inference", "embeddings", "transcription"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def student(stack):
    return stack.add_user("api-anna", "student", ("7a",))


@pytest.fixture(scope="module")
def client(stack, student):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=student.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "morgen.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-s", "140", "-w", str(path), SPEECH], check=True, capture_output=True)
    return path


def test_models_lists_the_chat_embeddings_and_speech_models(client):
    ids = [model.id for model in client.models.list()]
    assert ids[0] == "schulki-chat" and "schulki-embeddings" in ids and "whisper-1" in ids
    assert any("gemma" in i.lower() for i in ids), ids  # the served model's own name is listed too


def test_a_chat_completion_without_streaming(client, stack):
    completion = client.chat.completions.create(
        model="schulki-chat",
        messages=[{"role": "user", "content": "Was ist die Hauptstadt von Frankreich?"}],
        max_tokens=8,
        temperature=0,
        seed=1,
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert (
        completion.usage.completion_tokens <= 8
        and completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_a_streamed_chat_completion_arrives_in_pieces_with_usage(client):
    stream = client.chat.completions.create(
        model="schulki-chat",
        messages=[{"role": "user", "content": "Erzähl mir etwas über Berlin."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3 and "".join(pieces).strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["length"], ["stop"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= len(pieces) - 1
    # OpenAI's shape: every chunk names its kind; usage only in the last, the role only in the first delta
    assert all(getattr(c, "object", None) == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert [c for c in chunks[:-1] if "usage" in c.model_fields_set] == [] and chunks[-1].choices == []
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all("role" not in c.choices[0].delta.model_fields_set for c in chunks[1:-1])


def test_a_wrong_key_gives_401(stack):
    wrong = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-schulki-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="schulki-chat", messages=[{"role": "user", "content": "Hallo"}])
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"


@pytest.mark.parametrize("stream", [False, True])
def test_a_bad_request_fails_with_400_before_any_stream_starts(client, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="schulki-chat", messages=[{"role": "user", "content": "Hallo"}], temperature=7, stream=stream)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="schulki-chat", messages=[{"role": "wizard", "content": "Hallo"}], stream=stream)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hallo"}], stream=stream)


def test_the_inference_service_refusal_is_mapped_to_its_http_code(client):
    # an empty conversation is refused by the inference service itself with INVALID_ARGUMENT
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="schulki-chat",
            messages=[{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
            stream=True,
            max_tokens=2,
        )
    assert caught.value.body["code"] == "invalid_argument"


def test_unknown_routes_under_v1_answer_in_openais_shape(stack, student):
    response = httpx.post(stack.url + "/v1/assistants", headers={"Authorization": f"Bearer {student.api_key}"}, json={})
    assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_over_the_daily_token_quota_gives_429(stack):
    created = stack.add_user("api-greedy", "student")
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=created.api_key, max_retries=0)
    client.chat.completions.create(model="schulki-chat", messages=[{"role": "user", "content": "Hallo"}], max_tokens=2)
    stack.gateway.accounts.count_usage(created.account.id, tokens=stack.config.gateway.tokens_per_day["student"])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="schulki-chat", messages=[{"role": "user", "content": "Hallo"}], max_tokens=2)
    assert caught.value.status_code == 429 and "Tageskontingent" in caught.value.message


def test_over_the_requests_per_minute_gives_429_with_retry_after(stack):
    teacher = stack.add_user("api-teacher", "teacher")
    headers = {"Authorization": f"Bearer {teacher.api_key}"}
    body = {"model": "schulki-embeddings", "input": "Hallo"}
    codes = [httpx.post(stack.url + "/v1/embeddings", headers=headers, json=body, timeout=60).status_code for _ in range(3)]
    refused = httpx.post(stack.url + "/v1/embeddings", headers=headers, json=body, timeout=60)
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_embeddings_as_floats_and_as_base64(client):
    as_floats = client.embeddings.create(
        model="schulki-embeddings", input=["Der Hund bellt.", "Die Katze schläft."], encoding_format="float"
    )
    assert [d.index for d in as_floats.data] == [0, 1] and len(as_floats.data[0].embedding) == 384
    single = client.embeddings.create(model="schulki-embeddings", input="Der Hund bellt.", encoding_format="float")
    as_base64 = client.embeddings.create(model="schulki-embeddings", input="Der Hund bellt.")  # the client asks for base64 by default
    assert as_base64.data[0].embedding == pytest.approx(single.data[0].embedding, abs=1e-6)
    assert as_floats.usage.total_tokens > 0
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="schulki-embeddings", input=[])


def test_transcriptions_in_every_response_format(client, speech):
    with open(speech, "rb") as audio:
        as_json = client.audio.transcriptions.create(model="whisper-1", file=audio, language="de")
    assert "morgen" in as_json.text.lower()
    with open(speech, "rb") as audio:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert verbose.language == "german" and verbose.duration > 2 and verbose.segments[0].end > verbose.segments[0].start
    for fmt, marker in (("text", "orgen"), ("srt", "00:00:00,000 --> "), ("vtt", "WEBVTT")):
        with open(speech, "rb") as audio:
            text = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format=fmt, language="de")
        assert marker in text, (fmt, text)
    with open(speech, "rb") as audio, pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="docx")


def test_a_file_that_is_not_audio_is_refused_with_400(client, tmp_path):
    (tmp_path / "notes.wav").write_bytes(b"this is not audio at all" * 100)
    with open(tmp_path / "notes.wav", "rb") as fake, pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=fake)


def _raw_upload(url: str, key: str, headers: dict[str, str], body_chunks) -> int:
    """Send an upload over a raw connection and return the status the gateway answers with, as soon as it answers."""
    host = urlsplit(url).hostname
    with connect(url) as sock:
        head = [
            "POST /v1/audio/transcriptions HTTP/1.1",
            f"Host: {host}",
            f"Authorization: Bearer {key}",
            "Content-Type: multipart/form-data; boundary=xyz",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            pass  # the gateway stopped reading: that is the point (over TLS it shows as an early end of the stream)
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_a_2_gb_upload_is_refused_with_413_without_being_read(stack, student):
    # the headers promise 2 GiB; the answer comes before a byte of the body is sent
    assert _raw_upload(stack.url, student.api_key, {"Content-Length": str(2 * 1024**3)}, iter(())) == 413

    # without a Content-Length (chunked) the body is counted as it arrives and refused once it passes the limit
    def chunked():
        part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n' + b"x" * (1024 * 1024)
        for _ in range(64):
            yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
            part = b"x" * (1024 * 1024)

    assert _raw_upload(stack.url, student.api_key, {"Transfer-Encoding": "chunked"}, chunked()) == 413


def test_a_service_that_goes_down_and_returns_is_used_again_without_a_restart(tmp_path):
    config = stack_config(tmp_path)
    port = free_port()
    config.gateway.embeddings_addresses = [f"127.0.0.1:{port}"]
    with running_stack(tmp_path, services=("inference",), config=config) as stack:
        created = stack.add_user("api-recovery", "student")
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=created.api_key, max_retries=0, timeout=60)
        with pytest.raises(openai.InternalServerError) as caught:
            client.embeddings.create(model="schulki-embeddings", input="Hallo")
        assert caught.value.status_code == 503
        assert client.chat.completions.create(model="schulki-chat", messages=[{"role": "user", "content": "Hallo"}], max_tokens=2).choices
        process = ServiceProcess("embeddings", port=port, env={"SCHULKI_EMBEDDINGS__THREADS": "1"}).start()
        try:
            stack.wait_available("embeddings")
            assert len(client.embeddings.create(model="schulki-embeddings", input="Hallo").data[0].embedding) == 384
        finally:
            process.stop()
        stack.wait_available("embeddings", available=False)
        with pytest.raises(openai.InternalServerError):
            client.embeddings.create(model="schulki-embeddings", input="Hallo")


# -- one error shape on every route, typed request bodies, request ids ---------------------------------------------

ERROR_FIELDS = {"message", "type", "param", "code"}


def _error_of(call) -> tuple[int, dict]:
    """The status and OpenAI error object the official client raised for a call."""
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == ERROR_FIELDS, body
    return caught.value.status_code, body


def _every_route(client: openai.OpenAI, speech, model: str | None = None, big: bool = False) -> dict[str, object]:
    text = "x" * (5 * 1024 * 1024) if big else "Hallo"
    audio = speech.read_bytes() + (b"\0" * (9 * 1024 * 1024) if big else b"")
    return {
        "models": client.models.list,
        "chat": lambda: client.chat.completions.create(
            model=model or "schulki-chat", messages=[{"role": "user", "content": text}], max_tokens=2
        ),
        "chat_stream": lambda: list(
            client.chat.completions.create(
                model=model or "schulki-chat", messages=[{"role": "user", "content": text}], max_tokens=2, stream=True
            )
        ),
        "embeddings": lambda: client.embeddings.create(model=model or "schulki-embeddings", input=text),
        "transcriptions": lambda: client.audio.transcriptions.create(model=model or "whisper-1", file=("a.wav", audio)),
    }


@pytest.fixture(scope="module")
def down_stack(tmp_path_factory):
    """The gateway alone: every service is down."""
    folder = tmp_path_factory.mktemp("down")
    with running_stack(folder, services=(), config=stack_config(folder)) as running:
        yield running


def test_every_route_answers_the_same_failure_in_the_same_shape(stack, student, down_stack, speech):
    def client(url: str, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)

    no_key = {}  # the official client always sends a key: without one, the same requests by hand
    for name, method, route, body in (
        ("models", "GET", "models", {}),
        ("chat", "POST", "chat/completions", {"json": {"model": "schulki-chat", "messages": [{"role": "user", "content": "Hallo"}]}}),
        ("embeddings", "POST", "embeddings", {"json": {"model": "schulki-embeddings", "input": "Hallo"}}),
        (
            "transcriptions",
            "POST",
            "audio/transcriptions",
            {"files": {"file": ("a.wav", speech.read_bytes())}, "data": {"model": "whisper-1"}},
        ),
    ):
        response = httpx.request(method, f"{stack.url}/v1/{route}", timeout=60, **body)
        assert set(response.json()["error"]) == ERROR_FIELDS, response.text
        no_key[name] = (response.status_code, response.json()["error"])
    wrong_key = {name: _error_of(call) for name, call in _every_route(client(stack.url, "sk-schulki-wrong"), speech).items()}
    for failures in (no_key, wrong_key):
        assert {(status, body["type"], body["code"], body["param"]) for status, body in failures.values()} == {
            (401, "invalid_request_error", "invalid_api_key", None)
        }, failures

    routes = _every_route(client(stack.url, student.api_key), speech, model="gpt-4o")
    unknown = {name: _error_of(routes[name]) for name in ("chat", "chat_stream", "embeddings", "transcriptions")}
    assert {(status, body["type"], body["code"], body["param"]) for status, body in unknown.values()} == {
        (404, "invalid_request_error", "model_not_found", "model")
    }, unknown

    routes = _every_route(client(stack.url, student.api_key), speech, big=True)
    too_large = {name: _error_of(routes[name]) for name in ("chat", "embeddings", "transcriptions")}
    assert {(status, body["type"], body["code"]) for status, body in too_large.values()} == {
        (413, "invalid_request_error", "request_too_large")
    }, too_large

    someone = down_stack.add_user("api-down", "student")
    routes = _every_route(client(down_stack.url, someone.api_key), speech)
    down = {name: _error_of(routes[name]) for name in ("chat", "chat_stream", "embeddings", "transcriptions")}
    assert {(status, body["type"], body["code"]) for status, body in down.values()} == {
        (503, "service_unavailable", "service_unavailable")
    }, down
    assert client(down_stack.url, someone.api_key).models.list().data  # the gateway itself keeps serving


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("chat/completions", {"model": "schulki-chat", "messages": []}, "messages"),
        ("chat/completions", {"messages": [{"role": "user", "content": "Hallo"}]}, "model"),
        (
            "chat/completions",
            {"model": "schulki-chat", "messages": [{"role": "user", "content": "Hi"}], "temperature": "warm"},
            "temperature",
        ),
        ("chat/completions", {"model": "schulki-chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": True}, "max_tokens"),
        ("chat/completions", {"model": "schulki-chat", "messages": [{"role": "user", "content": "Hi"}], "seed": -1}, "seed"),
        ("chat/completions", {"model": "schulki-chat", "messages": [{"role": "user", "content": "Hi"}], "n": 2}, "n"),
        ("chat/completions", {"model": "schulki-chat", "messages": [{"role": "user", "content": "Hi"}], "stop": [1]}, "stop"),
        (
            "chat/completions",
            {"model": "schulki-chat", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
        ),
        ("chat/completions", {"model": "schulki-chat", "messages": [{"role": "wizard", "content": "Hi"}]}, "messages[0].role"),
        ("embeddings", {"model": "schulki-embeddings", "input": []}, "input"),
        ("embeddings", {"model": "schulki-embeddings", "input": [[1, 2, 3]]}, "input"),
        ("embeddings", {"model": "schulki-embeddings", "input": "Hallo", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_an_invalid_field_is_a_400_naming_it(stack, student, route, body, param):
    response = httpx.post(f"{stack.url}/v1/{route}", headers={"Authorization": f"Bearer {student.api_key}"}, json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS and error["type"] == "invalid_request_error" and error["param"] == param, error


def test_a_body_that_is_not_a_json_object_is_a_400(stack, student):
    headers = {"Authorization": f"Bearer {student.api_key}", "Content-Type": "application/json"}
    for content in (b"{not json", b"[1, 2]"):
        response = httpx.post(f"{stack.url}/v1/chat/completions", headers=headers, content=content, timeout=60)
        assert response.status_code == 400 and set(response.json()["error"]) == ERROR_FIELDS, response.text


def test_fields_schulki_does_not_know_are_accepted(client):
    completion = client.chat.completions.create(
        model="schulki-chat",
        messages=[{"role": "user", "content": "Hallo", "name": "anna"}],
        max_tokens=2,
        frequency_penalty=0.5,
        user="someone",
        logit_bias={"1": 1},
    )
    assert completion.choices[0].message.role == "assistant"
    assert client.embeddings.create(model="schulki-embeddings", input="Hallo", user="someone", dimensions=384).data


def test_the_request_id_follows_each_api_request_into_every_service_log(client, speech):
    with service_log() as log:
        chat = client.chat.completions.with_raw_response.create(
            model="schulki-chat",
            messages=[{"role": "user", "content": "Hallo"}],
            max_tokens=2,
            extra_headers={"X-Request-Id": "api-chat-1"},
        )
        assert chat.headers["x-request-id"] == "api-chat-1"
        list(
            client.chat.completions.create(
                model="schulki-chat",
                messages=[{"role": "user", "content": "Hallo"}],
                max_tokens=2,
                stream=True,
                extra_headers={"X-Request-Id": "api-stream-1"},
            )
        )
        client.embeddings.create(model="schulki-embeddings", input="Hallo", extra_headers={"X-Request-Id": "api-embed-1"})
        with open(speech, "rb") as audio:
            client.audio.transcriptions.create(model="whisper-1", file=audio, extra_headers={"X-Request-Id": "api-speech-1"})
        plain = client.embeddings.with_raw_response.create(model="schulki-embeddings", input="Hallo")
        log.wait_for("inference", "Chat", "api-chat-1")
        log.wait_for("inference", "Chat", "api-stream-1")
        log.wait_for("embeddings", "Embed", "api-embed-1")
        log.wait_for("transcription", "Transcribe", "api-speech-1")
        made_up = plain.headers["x-request-id"]  # a request without an id gets one, and the services log that one
        log.wait_for("embeddings", "Embed", made_up)
    assert made_up not in {"api-chat-1", "api-embed-1", "-"}
    # an id that could break a log line is not taken over
    odd = client.embeddings.with_raw_response.create(model="schulki-embeddings", input="Hallo", extra_headers={"X-Request-Id": "a b\tc"})
    assert odd.headers["x-request-id"] != "a b\tc"


def test_an_error_never_echoes_a_huge_value_back():
    """A 100,000-character id a client sent comes back in a message of at most MAX_MESSAGE_CHARS."""
    from schulki.gateway.api.errors import MAX_MESSAGE_CHARS, ApiError

    body = ApiError(404, f"No file with id {'f' * 100_000!r} found.", "not_found_error").body()
    assert len(body["error"]["message"]) == MAX_MESSAGE_CHARS and body["error"]["message"].startswith("No file with id 'fff")
    assert ApiError(400, "short").body()["error"]["message"] == "short"
