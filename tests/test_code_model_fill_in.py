"""A real code model fills the gap between prefix and suffix through /v1/infill and a suffix on /v1/completions.

Runs where the catalog's Qwen2.5-Coder file lies in the models folder (the
school's mirror puts it there; no hub is reached from the tests): the default
model has no fill-in-the-middle tokens. The keystroke after a keystroke reads
only what changed: the prefix cache's reused tokens are counted.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from schulki.models.catalog import load_catalog
from schulki.models.defaults import models_dir

from tests.gateway_stack import running_stack, stack_config

CODE_MODEL = load_catalog().model("qwen2.5-coder-1.5b-instruct").file_for("Q4_K_M").file
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\n\nprint(add(2, 3))\n"

pytestmark = pytest.mark.skipif(
    not (models_dir() / CODE_MODEL).is_file(), reason=f"the code model {CODE_MODEL} is not in {models_dir()} (the school's mirror has it)"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("code-model")
    config = stack_config(folder)
    config.inference.model_path = models_dir() / CODE_MODEL
    config.inference.context_length = 2048
    with running_stack(folder, services=("inference",), config=config) as running:
        running.wait_available("inference")
        yield running


@pytest.fixture(scope="module")
def student(stack):
    return stack.add_user("coder-clara", "student")


def test_infill_fills_the_gap_and_the_next_keystroke_reuses_the_cache(stack, student):
    headers = {"Authorization": f"Bearer {student.api_key}"}
    body = {
        "input_prefix": PREFIX,
        "input_suffix": SUFFIX,
        "input_extra": [{"filename": "notes.py", "text": "# Addition zweier Zahlen\n"}],
        "n_predict": 12,
        "temperature": 0,
    }
    engine = stack.servers["inference"].services[0].engine
    answer = httpx.post(stack.url + "/v1/infill", json=body, headers=headers, timeout=300)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert "return" in result["content"] and "a" in result["content"] and result["stop"] is True
    assert result["tokens_evaluated"] > len(PREFIX) // 8
    reused_before = engine.stats.reused_tokens
    body["input_prefix"] = PREFIX + "re"
    again = httpx.post(stack.url + "/v1/infill", json=body, headers=headers, timeout=300).json()
    # The next keystroke's prompt shares everything up to the cursor with the last one.
    assert engine.stats.reused_tokens - reused_before >= again["tokens_evaluated"] - len(SUFFIX) // 2 - 8


def test_a_suffix_on_completions_fills_the_gap(stack, student):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=student.api_key, max_retries=0, timeout=300)
    completion = client.completions.create(model="schulki-chat", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, temperature=0)
    assert "a" in completion.choices[0].text and "b" in completion.choices[0].text
