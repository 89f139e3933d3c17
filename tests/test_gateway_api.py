"""The OpenAI-compatible API under /v1, driven by the official openai client, against the real services."""

from __future__ import annotations

import ssl
import subprocess
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.conftest import ServiceProcess, free_port
from tests.gateway_stack import connect, running_stack, stack_config

SPEECH = "Guten Morgen. Heute lernen wir die Photosynthese."


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
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(path), SPEECH], check=True, capture_output=True)
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
    response = httpx.post(stack.url + "/v1/completions", headers={"Authorization": f"Bearer {student.api_key}"}, json={})
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
