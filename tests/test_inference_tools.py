"""Tool calls in the inference service: the fallback format of a model whose template shows no tools (the default
Gemma 3 270M), forced and free calls under a grammar, beside answers without tools in one batch."""

from __future__ import annotations

import json
import threading
import time

import grpc
import jsonschema
import pytest
from schulki.config import Config
from schulki.inference import build
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc

from tests.json_schemas import WEATHER
from tests.service_support import service_fixtures


def make_service():
    config = Config()
    config.inference.threads = 1
    config.inference.parallel_sequences = 4
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)

WEATHER_TOOL = pb.Tool(name="get_weather", description="Das Wetter in einer Stadt", parameters=json.dumps(WEATHER))
CLOCK_TOOL = pb.Tool(name="get_time", description="Die Uhrzeit", parameters="")


def ask(text: str, choice: int, max_tokens: int = 96, **fields) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content=text)],
        max_tokens=max_tokens,
        sampling=pb.SamplingOptions(temperature=0.0),
        tools=[WEATHER_TOOL, CLOCK_TOOL],
        tool_choice=choice,
        **fields,
    )


def run(stub, request: pb.ChatRequest) -> tuple[str, list[pb.ToolCall], pb.ChatFinish]:
    text, calls, finish = "", [], None
    for response in stub.Chat(request, timeout=600):
        if response.HasField("tool_call"):
            calls.append(response.tool_call)
        elif response.HasField("finish"):
            finish = response.finish
        else:
            text += response.text
    assert finish is not None
    return text, calls, finish


class Answer(threading.Thread):
    """One Chat call on its own thread: its text, its calls, its finish."""

    def __init__(self, stub, request: pb.ChatRequest):
        super().__init__(daemon=True)
        self.stub, self.request = stub, request
        self.text, self.calls, self.finish = "", [], None

    def run(self) -> None:
        self.text, self.calls, self.finish = run(self.stub, self.request)


def test_the_default_model_gets_the_fallback_format(server):
    assert not server.service.engine.tool_format.native


def test_a_named_function_is_called_with_arguments_valid_for_its_schema(stub):
    text, calls, finish = run(stub, ask("Wie ist das Wetter in Berlin?", pb.TOOL_CHOICE_FUNCTION, tool_choice_function="get_weather"))
    assert text == "" and finish.reason == pb.FINISH_REASON_TOOL_CALLS
    assert [c.name for c in calls] == ["get_weather"] and calls[0].id.startswith("call_")
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)


def test_required_calls_an_offered_tool_with_valid_arguments(stub):
    _, calls, finish = run(stub, ask("Wie ist das Wetter in Hamburg?", pb.TOOL_CHOICE_REQUIRED, parallel_tool_calls=False))
    assert finish.reason == pb.FINISH_REASON_TOOL_CALLS and len(calls) == 1
    call = calls[0]
    assert call.name in ("get_weather", "get_time")
    if call.name == "get_weather":
        jsonschema.validate(json.loads(call.arguments), WEATHER)
    else:
        assert isinstance(json.loads(call.arguments), dict)


def test_none_gives_text_and_no_call(stub):
    text, calls, finish = run(stub, ask("Wie ist das Wetter in Berlin?", pb.TOOL_CHOICE_NONE, max_tokens=16))
    assert calls == [] and text and finish.reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert not text.startswith("{")  # not a call cut off by max_tokens either


def test_auto_streams_text_that_does_not_start_a_call(stub):
    text, calls, finish = run(stub, ask("Erzähl mir einen Witz.", pb.TOOL_CHOICE_AUTO, max_tokens=16))
    if calls:  # the model chose a call: then it is whole and valid
        assert finish.reason == pb.FINISH_REASON_TOOL_CALLS and text == ""
    else:
        assert text and not text.startswith("{") and finish.reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)


def test_a_conversation_with_a_call_and_its_result_is_answered(stub):
    call = pb.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Berlin", "unit": "celsius"}')
    request = pb.ChatRequest(
        messages=[
            pb.Message(role=pb.ROLE_USER, content="Wie ist das Wetter in Berlin?"),
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
            pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_1", content='{"temperature": 21, "sky": "sonnig"}'),
        ],
        max_tokens=24,
        sampling=pb.SamplingOptions(temperature=0.0),
        tools=[WEATHER_TOOL],
        tool_choice=pb.TOOL_CHOICE_NONE,
    )
    text, calls, finish = run(stub, request)
    assert text.strip() and calls == []
    # the call and its result are part of the prompt: each adds to it
    del request.messages[-1]
    _, _, called = run(stub, request)
    del request.messages[-1]
    _, _, plain = run(stub, request)
    assert finish.usage.prompt_tokens > called.usage.prompt_tokens > plain.usage.prompt_tokens


@pytest.mark.parametrize(
    ("request_fields", "problem"),
    [
        ({"tools": [pb.Tool(name="f", parameters='{"type": "nonsense"}')]}, "Werkzeug f"),
        ({"tools": [pb.Tool(name="kein name", parameters="")]}, "Werkzeugname"),
        ({"tools": [WEATHER_TOOL], "tool_choice": pb.TOOL_CHOICE_FUNCTION, "tool_choice_function": "fly"}, "'fly'"),
        ({"tool_choice": pb.TOOL_CHOICE_REQUIRED}, "keine Werkzeuge"),
    ],
)
def test_tools_that_cannot_be_followed_are_invalid_arguments(stub, request_fields, problem):
    request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="Hallo")], max_tokens=4, **request_fields)
    with pytest.raises(grpc.RpcError) as caught:
        run(stub, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and problem in caught.value.details(), caught.value.details()


def test_a_tool_result_without_its_call_is_an_invalid_argument(stub):
    request = pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="Hallo"), pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_9", content="21")],
        max_tokens=4,
    )
    with pytest.raises(grpc.RpcError) as caught:
        run(stub, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "call_9" in caught.value.details()


def test_answers_with_and_without_tools_run_side_by_side_in_one_batch(server, stub):
    called = [Answer(stub, ask(f"Wetter in Stadt {i}?", pb.TOOL_CHOICE_FUNCTION, tool_choice_function="get_weather")) for i in range(2)]
    free = [Answer(stub, pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="Erzähl von der Zahl 0.")], max_tokens=24))]
    free += [Answer(stub, ask(f"Erzähl von der Zahl {i}.", pb.TOOL_CHOICE_NONE, max_tokens=24)) for i in range(1, 2)]
    answers = called + free
    most, watching = [0], threading.Event()

    def watch() -> None:  # the most sequences the engine decoded at once while the four ran
        while not watching.is_set():
            most[0] = max(most[0], server.service.engine.running)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for i, answer in enumerate(answers):
        answer.request.user = f"schueler-{i}"  # four users, so the per-user cap lets all four run at once
        answer.start()
    for answer in answers:
        answer.join(600)
        assert answer.finish is not None, answer.request
    watching.set()
    for answer in called:
        assert answer.finish.reason == pb.FINISH_REASON_TOOL_CALLS and answer.text == ""
        assert [c.name for c in answer.calls] == ["get_weather"]
        jsonschema.validate(json.loads(answer.calls[0].arguments), WEATHER)
    assert all(a.text and not a.calls for a in free), [a.text for a in free]
    assert most[0] == 4  # the calls and the free answers were decoded in the same batch, not one after the other


# A chat template that renders tools and writes calls in <tool_call> tags, in the way of Qwen2.5's and Hermes' templates.
TAGGED_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>{% for t in tools %}\n{{ t.function | tojson }}{% endfor %}\n</tools>\n"
    'Call a function with <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n{% endif %}'
    "{% for m in messages %}{% if m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content or '' }}{% for c in m.tool_calls or [] %}\n<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n'
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_that_renders_tools_gets_them_and_the_calls_natively():
    from schulki.inference.tool_calls import checked_tools, conversation, template_tools, tool_format_of
    from schulki.runtime.llama_adapter import chat_formatter

    formatter = chat_formatter(TAGGED_TEMPLATE, eos_token="<|im_end|>", bos_token="")
    fmt = tool_format_of(formatter, TAGGED_TEMPLATE)
    assert fmt.native and fmt.hermes
    call = pb.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Berlin", "unit": "celsius"}')
    request = pb.ChatRequest(
        messages=[
            pb.Message(role=pb.ROLE_USER, content="Wetter in Berlin?"),
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
            pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_1", content="21 Grad"),
        ],
        tools=[WEATHER_TOOL],
    )
    tools = checked_tools(request)
    prompt = formatter(messages=conversation(request.messages, tools, fmt), tools=template_tools(tools)).prompt
    assert '"name": "get_weather"' in prompt.split("</tools>")[0]  # the tool, in the template's own tools section
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Berlin", "unit": "celsius"}}\n</tool_call>' in prompt
    assert "<tool_response>\n21 Grad\n</tool_response>" in prompt
    assert "You can call" not in prompt  # no fallback description beside the template's own


def test_tagged_calls_are_forced_and_read(server, stub):
    from schulki.inference.tool_calls import ToolFormat

    engine = server.service.engine
    before, engine.tool_format = engine.tool_format, ToolFormat(native=True, hermes=True)
    try:
        text, calls, finish = run(stub, ask("Wie ist das Wetter in Berlin?", pb.TOOL_CHOICE_FUNCTION, tool_choice_function="get_weather"))
        _, required, _ = run(stub, ask("Wie ist das Wetter in Berlin?", pb.TOOL_CHOICE_REQUIRED, parallel_tool_calls=False))
    finally:
        engine.tool_format = before
    assert text == "" and finish.reason == pb.FINISH_REASON_TOOL_CALLS and [c.name for c in calls] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    assert required and all(c.name in ("get_weather", "get_time") for c in required)
