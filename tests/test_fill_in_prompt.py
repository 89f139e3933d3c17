"""The fill-in-the-middle prompt, token by token, against llama.cpp server's ``format_prompt_infill``.

The default model has no FIM tokens, so its real tokenizer writes the text and
ids outside its vocabulary's special range stand for the FIM tokens. Each
expected list is spelled out in the order of llama.cpp's code
(tools/server/server-common.cpp of the pinned llama-cpp-python sdist): the
extra files (repo name, one file separator and name per file, the current file's
name), then BOS, FIM_PRE, the prefix's end, the prompt, FIM_SUF, the suffix's
start, FIM_MID; the prefix cut to 3/4 of a batch, the suffix to the rest of a
quarter, the extra files to what the context leaves after a batch and twice
n_predict.
"""

from __future__ import annotations

import pytest
from schulki.inference.fill_in import FimTokens, fill_in_the_middle_prompt
from schulki.models.defaults import chat_model_path
from schulki.runtime import llama_adapter as lc

PRE, SUF, MID, REP, SEP, BOS = 900_001, 900_002, 900_003, 900_004, 900_005, 2
QWEN_LIKE = FimTokens(prefix=PRE, suffix=SUF, middle=MID, repo=REP, file_sep=SEP)
"""Qwen2.5-Coder's kind: repo and file separator tokens, no BOS."""
CODELLAMA_LIKE = FimTokens(prefix=PRE, suffix=SUF, middle=MID, bos=BOS)
"""CodeLlama's kind: only prefix, suffix and middle, and a BOS."""


@pytest.fixture(scope="module")
def tokenize():
    model, _ = lc.load_model(chat_model_path(), gpu_layers=0)
    yield lambda text: model.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []
    model.close()


def test_the_repository_level_pattern_puts_extra_files_before_the_prefix_and_the_prefix_before_the_suffix(tokenize):
    extra = [("utils.py", "def helper():\n    pass\n"), ("", "KONSTANTE = 3\n")]
    prompt = tokenize("re")
    tokens = fill_in_the_middle_prompt(
        tokenize, QWEN_LIKE, "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n", extra, prompt, n_batch=512, n_predict=64, n_ctx=4096
    )
    expected = [
        REP,
        *tokenize("myproject\n"),
        SEP,
        *tokenize("utils.py\n"),
        *tokenize("def helper():\n    pass\n"),
        SEP,
        *tokenize("\n"),  # an empty name stays empty, as in llama-server (a missing one is "tmp" at the gateway)
        *tokenize("KONSTANTE = 3\n"),
        SEP,
        *tokenize("filename\n"),
        PRE,
        *tokenize("def add(a, b):\n    "),
        *prompt,
        SUF,
        *tokenize("\n\nprint(add(1, 2))\n"),
        MID,
    ]
    assert tokens == expected


def test_without_a_file_separator_extra_files_are_snippets_and_bos_stands_after_them(tokenize):
    tokens = fill_in_the_middle_prompt(
        tokenize, CODELLAMA_LIKE, "x = ", "\n", [("a.py", "y = 1\n")], [], n_batch=512, n_predict=16, n_ctx=4096
    )
    snippet = tokenize("\n\n--- snippet ---\n\n")
    assert tokens == [*snippet, *tokenize("y = 1\n"), BOS, PRE, *tokenize("x = "), SUF, *tokenize("\n"), MID]


def test_prefix_suffix_and_extra_files_are_cut_as_llama_server_cuts_them(tokenize):
    prefix = " ".join(f"zeile{i}" for i in range(400))
    suffix = " ".join(f"rest{i}" for i in range(400))
    extra = [("big.py", " ".join(f"wert{i}" for i in range(400)))]
    prompt = tokenize("abc")
    n_batch, n_predict, n_ctx = 64, 16, 256
    tokens = fill_in_the_middle_prompt(
        tokenize, QWEN_LIKE, prefix, suffix, extra, prompt, n_batch=n_batch, n_predict=n_predict, n_ctx=n_ctx
    )
    all_extra = [REP, *tokenize("myproject\n"), SEP, *tokenize("big.py\n"), *tokenize(extra[0][1]), SEP, *tokenize("filename\n")]
    extra_take = n_ctx - n_batch - 2 * n_predict  # 160: the newest extra tokens, the current file's name last
    prefix_take = 3 * (n_batch // 4)  # 48: the end of the prefix, next to the cursor
    suffix_take = n_batch // 4 - (2 + len(prompt))  # the start of the suffix, next to the cursor
    expected = [
        *all_extra[-extra_take:],
        PRE,
        *tokenize(prefix)[-prefix_take:],
        *prompt,
        SUF,
        *tokenize(suffix)[:suffix_take],
        MID,
    ]
    assert tokens == expected
    assert len(tokens) == extra_take + 1 + prefix_take + len(prompt) + 1 + suffix_take + 1


def test_the_next_keystroke_starts_with_everything_the_last_one_computed_up_to_the_cursor(tokenize):
    extra = [("utils.py", "def helper():\n    return 42\n")]
    suffix = "\n\nif __name__ == '__main__':\n    main()\n"
    first = fill_in_the_middle_prompt(
        tokenize, QWEN_LIKE, "def main():\n    total = hel", suffix, extra, [], n_batch=512, n_predict=32, n_ctx=4096
    )
    second = fill_in_the_middle_prompt(
        tokenize, QWEN_LIKE, "def main():\n    total = help", suffix, extra, [], n_batch=512, n_predict=32, n_ctx=4096
    )
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    # Only the prefix's last word and what follows it differ: the prefix cache reads those, not the extra files again.
    assert shared >= first.index(PRE) + len(tokenize("def main():\n    total ="))
    assert len(second) - shared <= len(tokenize(suffix)) + 4
