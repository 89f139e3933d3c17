"""Fill-in-the-middle prompts for code models, token by token as llama.cpp's server builds them.

``fill_in_the_middle_prompt`` follows ``format_prompt_infill`` of llama.cpp's
server (tools/server/server-common.cpp, the version vendored in the pinned
llama-cpp-python), so that an editor made for llama-server's ``/infill``
(llama.vscode, llama.vim) gets the prompt the model was trained with. It uses
the repository-level pattern of Qwen2.5-Coder (arXiv 2409.12186):

    [FIM_REP]myproject\\n [FIM_SEP]file name\\n text ... [FIM_SEP]filename\\n
    [BOS] [FIM_PRE]prefix prompt [FIM_SUF]suffix [FIM_MID]

The prefix comes before the suffix, the order Qwen2.5-Coder and CodeLlama were
trained with (llama-server's default, not its ``--spm-infill``), and the extra
files, the bulk of the prompt, come first: while a student types, the prefix
grows at its end and the rest stays, so the next keystroke's prompt starts with
everything the last one computed up to the cursor, and the engine's prefix
cache reads only the few tokens that changed and the suffix after them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

REPO_NAME = "myproject\n"
"""The project name llama-server writes after FIM_REP (a fixed name: editors do not send one)."""
CURRENT_FILE = "filename\n"
"""The name llama-server gives the file being edited after the last FIM_SEP (editors do not send it either)."""
SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"
"""What stands before each extra file when the model has no FIM_SEP token."""


@dataclass(frozen=True)
class FimTokens:
    """The fill-in-the-middle tokens of a vocabulary; ``repo`` and ``file_sep`` only where the model has them."""

    prefix: int
    suffix: int
    middle: int
    repo: int | None = None
    file_sep: int | None = None
    bos: int | None = None
    """The BOS token when the vocabulary adds one to every prompt."""


def fim_tokens_of(vocab: object) -> FimTokens | None:
    """The FIM tokens of a llama.cpp vocabulary, or None when it lacks the prefix, suffix or middle token."""
    from schulki.runtime import llama_adapter as lc

    def token(value: int) -> int | None:
        return None if value < 0 else value

    prefix, suffix, middle = (token(f(vocab)) for f in (lc.llama_vocab_fim_pre, lc.llama_vocab_fim_suf, lc.llama_vocab_fim_mid))
    if prefix is None or suffix is None or middle is None:
        return None
    return FimTokens(
        prefix=prefix,
        suffix=suffix,
        middle=middle,
        repo=token(lc.llama_vocab_fim_rep(vocab)),
        file_sep=token(lc.llama_vocab_fim_sep(vocab)),
        bos=token(lc.llama_vocab_bos(vocab)) if lc.llama_vocab_get_add_bos(vocab) else None,
    )


def fill_in_the_middle_prompt(
    tokenize: Callable[[str], list[int]],
    fim: FimTokens,
    prefix: str,
    suffix: str,
    extra_files: Sequence[tuple[str, str]],
    prompt_tokens: Sequence[int],
    *,
    n_batch: int,
    n_predict: int,
    n_ctx: int,
) -> list[int]:
    """The prompt tokens of one fill-in-the-middle request.

    ``tokenize`` turns text into tokens without special tokens and without BOS;
    ``extra_files`` are (file name, text) pairs; ``prompt_tokens`` start the
    middle. As in llama-server, the prefix and suffix are cut to fit one batch
    (3:1: the end of the prefix, the start of the suffix), and the extra files
    fill what the context has left after one batch and twice ``n_predict``,
    their oldest tokens dropped first.
    """
    extra: list[int] = []
    if fim.repo is not None:
        extra += [fim.repo, *tokenize(REPO_NAME)]
    for name, text in extra_files:
        if fim.file_sep is not None:
            extra += [fim.file_sep, *tokenize(name + "\n")]
        else:
            extra += tokenize(SNIPPET_SEPARATOR)
        extra += tokenize(text)
    if fim.file_sep is not None:
        extra += [fim.file_sep, *tokenize(CURRENT_FILE)]

    prefix_tokens, suffix_tokens = tokenize(prefix), tokenize(suffix)
    prefix_take = min(len(prefix_tokens), 3 * (n_batch // 4))
    suffix_take = min(len(suffix_tokens), max(0, n_batch // 4 - (2 + len(prompt_tokens))))
    extra_take = min(max(0, n_ctx - n_batch - 2 * n_predict), len(extra))

    head = [fim.prefix, *prefix_tokens[len(prefix_tokens) - prefix_take :], *prompt_tokens]
    tail = [fim.suffix, *suffix_tokens[:suffix_take]]
    if fim.bos is not None:
        head.insert(0, fim.bos)
    taken_extra = extra[len(extra) - extra_take :] if extra_take else []
    return [*taken_extra, *head, *tail, fim.middle]
