"""/v1/completions and /v1/infill for editors, driven by the official openai client against the real gateway and model.

The default model (Gemma 3 270M) has no fill-in-the-middle tokens, so here it
continues raw prompts and refuses ``suffix`` and /v1/infill with a 400 that says
why; the filled gap itself is tested on the token level (test_fill_in_prompt.py)
and with a real code model where its file is present (test_code_model_fill_in.py).
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway_stack import running_stack, stack_config

PROMPT = "Die Hauptstadt von Frankreich ist Paris. Die Hauptstadt von Deutschland ist"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("completions")
    config = stack_config(folder)
    with running_stack(folder, services=("inference",), config=config) as running:
        running.wait_available("inference")
        # Students may use no model by role; class 7a's lesson model is the one served here, so only 7a's students may.
        served = running.gateway.models.names()[0]
        running.gateway.models.set_role_models("student", [])
        running.gateway.accounts.set_setting("class_model_7a", served)
        yield running


@pytest.fixture(scope="module")
def model(stack) -> str:
    return stack.gateway.models.names()[0]


@pytest.fixture(scope="module")
def anna(stack):
    return stack.add_user("code-anna", "student", ("7a",))


@pytest.fixture(scope="module")
def client(stack, anna):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=anna.api_key, max_retries=0, timeout=120)


def _greedy(client, model, **kwargs):
    return client.completions.create(model=model, prompt=PROMPT, temperature=0, seed=1, **kwargs)


def test_a_raw_prompt_is_continued_without_the_chat_template(client, model, stack):
    completion = _greedy(client, model, max_tokens=8)
    choice = completion.choices[0]
    assert completion.object == "text_completion" and completion.model == model
    assert choice.text.strip() and choice.finish_reason in ("stop", "length") and choice.index == 0
    usage = completion.usage
    assert usage.completion_tokens <= 8 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # The prompt as it is, BOS and its own tokens only: a chat template would add the turn markers around it.
    engine = stack.servers["inference"].services[0].engine
    assert usage.prompt_tokens == 1 + len(engine.tokens_of(PROMPT))
    assert "Berlin" in choice.text, choice.text


def test_special_tokens_written_in_a_raw_prompt_are_read_as_such(client, model, stack):
    # Continue writes a code model's FIM template into the prompt itself; llama-server reads its markers as special tokens.
    turn = "<start_of_turn>user\nHallo<end_of_turn>\n<start_of_turn>model\n"
    completion = client.completions.create(model=model, prompt=turn, max_tokens=2, temperature=0)
    as_text = len(stack.servers["inference"].services[0].engine.tokens_of(turn))
    assert completion.usage.prompt_tokens <= 1 + as_text - 3 * 3  # each of the three markers is one token, not four or more


def test_a_streamed_completion_arrives_in_pieces(client, model):
    chunks = list(_greedy(client, model, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    # Greedy text may part ways with an earlier answer's after a near tie (the prefix cache changes the batch shapes and
    # with them the last bits of the logits); the first words are far from any tie.
    assert len(pieces) >= 3 and "".join(pieces).startswith(" Berlin")
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["length"], ["stop"])
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= len(pieces) - 1


def test_echo_puts_the_prompt_before_the_completion(client, model):
    echoed = _greedy(client, model, max_tokens=6, echo=True).choices[0].text
    assert echoed.startswith(PROMPT + " Berlin")
    streamed = [c.choices[0].text for c in _greedy(client, model, max_tokens=6, echo=True, stream=True) if c.choices]
    assert streamed[0] == PROMPT and "".join(streamed[1:]).startswith(" Berlin")
    assert not _greedy(client, model, max_tokens=6).choices[0].text.startswith(PROMPT)  # and only with echo


def test_a_stop_string_ends_the_completion_before_it(client, model):
    plain = _greedy(client, model, max_tokens=16).choices[0]
    assert plain.text.startswith(" Berlin.") and plain.finish_reason == "length"
    stopped = _greedy(client, model, max_tokens=16, stop=["ZZZ", "."]).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == " Berlin"
    streamed = [c.choices[0] for c in _greedy(client, model, max_tokens=16, stop=["."], stream=True) if c.choices]
    assert "".join(c.text for c in streamed) == " Berlin" and streamed[-1].finish_reason == "stop"


def test_a_suffix_or_an_infill_on_a_model_without_fill_in_the_middle_tokens_is_a_clear_400(client, model, stack, anna):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", max_tokens=8)
    assert "fill-in-the-middle" in caught.value.message and "Code-Modell" in caught.value.message
    body = {"model": model, "input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 8}
    response = httpx.post(stack.url + "/v1/infill", json=body, headers={"Authorization": f"Bearer {anna.api_key}"}, timeout=120)
    assert response.status_code == 400 and "fill-in-the-middle" in response.json()["error"]["message"]


def test_fields_schulki_cannot_honour_are_refused_by_name(client, model):
    for field, value in (("n", 2), ("best_of", 3), ("presence_penalty", 0.5)):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=model, prompt=PROMPT, max_tokens=4, **{field: value})
        assert caught.value.body["param"] == field, (field, caught.value.body)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt=PROMPT, max_tokens=4, echo=True, suffix="x")
    assert caught.value.body["param"] == "echo"


def test_a_malformed_infill_body_is_refused_naming_the_field(stack, anna):
    headers = {"Authorization": f"Bearer {anna.api_key}"}
    for body, param in (
        ({"input_suffix": ""}, "input_prefix"),
        ({"input_prefix": "x", "input_suffix": "", "input_extra": "utils.py"}, "input_extra"),
        ({"input_prefix": "x", "input_suffix": "", "input_extra": [{"filename": "a.py"}]}, "input_extra[0].text"),
        ({"input_prefix": "x", "input_suffix": "", "n_predict": -2}, "n_predict"),
    ):
        response = httpx.post(stack.url + "/v1/infill", json=body, headers=headers, timeout=60)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, (body, response.text)


@pytest.mark.parametrize("stream", [False, True])
def test_an_over_long_prompt_gets_a_clear_400_before_any_stream(client, model, stack, anna, stream):
    before = stack.gateway.accounts.tokens_today(anna.account.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt="Wort " * 6000, max_tokens=4, stream=stream)
    assert "zu lang" in caught.value.message and "context holds" in caught.value.message
    assert stack.gateway.accounts.tokens_today(anna.account.id) == before  # a refused prompt costs nothing


def test_the_quota_counts_the_real_usage_and_refuses_when_it_is_spent(stack, model):
    greedy = stack.add_user("code-greta", "student", ("7a",))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=greedy.api_key, max_retries=0, timeout=120)
    completion = _greedy(client, model, max_tokens=5)
    assert stack.gateway.accounts.tokens_today(greedy.account.id) == completion.usage.total_tokens
    stack.gateway.accounts.count_usage(greedy.account.id, tokens=stack.config.gateway.tokens_per_day["student"])
    with pytest.raises(openai.RateLimitError) as caught:
        _greedy(client, model, max_tokens=5)
    assert "Tageskontingent" in caught.value.message


def test_another_students_key_reaches_neither_the_model_of_a_class_nor_its_usage(stack, model, client, anna):
    ben = stack.add_user("code-ben", "student", ("8b",))
    other = openai.OpenAI(base_url=stack.url + "/v1", api_key=ben.api_key, max_retries=0, timeout=120)
    anna_before = stack.gateway.accounts.tokens_today(anna.account.id)
    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            other.completions.create(model=model, prompt=PROMPT, max_tokens=4, stream=stream)
        assert "nicht freigegeben" in caught.value.message
    response = httpx.post(
        stack.url + "/v1/infill",
        json={"model": model, "input_prefix": "x = ", "input_suffix": ""},
        headers={"Authorization": f"Bearer {ben.api_key}"},
        timeout=60,
    )
    assert response.status_code == 403
    assert stack.gateway.accounts.tokens_today(ben.account.id) == 0
    assert stack.gateway.accounts.tokens_today(anna.account.id) == anna_before  # nothing of Ben's lands on Anna's account
    wrong = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-schulki-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model=model, prompt=PROMPT, max_tokens=4)
