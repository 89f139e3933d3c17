"""The table a teacher puts on a slide: quant, file size, perplexity, mean KLD, top-token agreement, accuracy, tokens/s."""

from __future__ import annotations

BITS_PER_WEIGHT = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_1": 6.0,
    "Q5_K_M": 5.7,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q4_1": 5.0,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "Q4_0": 4.5,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "IQ3_M": 3.7,
    "Q3_K_S": 3.5,
    "IQ3_S": 3.44,
    "IQ3_XS": 3.3,
    "IQ3_XXS": 3.06,
    "Q2_K": 2.96,
    "Q2_K_S": 2.7,
    "IQ2_M": 2.7,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_M": 1.75,
    "IQ1_S": 1.56,
}
"""Bits per weight by quant (llama.cpp's quantize README): decides which file is the reference."""
HEADERS = ("host", "file", "quant", "size", "perplexity", "mean KLD", "same top", "questions", "prompt tok/s", "gen tok/s", "memory")
HEADERS_DE = (
    "Rechner",
    "Datei",
    "Quant",
    "Größe",
    "Perplexität",
    "mittl. KLD",
    "gleiches Top-Token",
    "Fragen richtig",
    "Prompt Tok/s",
    "Antwort Tok/s",
    "Speicher",
)


def _size(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def row(record: dict) -> list[str]:
    """One record as the cells of the table."""
    reference = record.get("is_reference")
    kld = record.get("mean_kld")
    top = record.get("same_top_percent")
    questions = record.get("questions") or {}
    speed = record.get("speed") or {}
    ppl = record.get("perplexity")
    return [
        record.get("host", "?"),
        record.get("file", "?"),
        record.get("quant", "?"),
        _size(record.get("size_bytes")),
        f"{ppl:.2f} ± {record.get('perplexity_error', 0):.2f}" if ppl is not None else "–",
        "Referenz" if reference else (f"{kld:.4f}" if kld is not None else "–"),
        "Referenz" if reference else (f"{top:.1f} %" if top is not None else "–"),
        f"{questions['correct']}/{questions['total']} ({100 * questions['accuracy']:.0f} %)" if questions.get("total") else "–",
        f"{speed['prompt_tokens_per_s']:.0f}" if speed else "–",
        f"{speed['generation_tokens_per_s']:.1f}" if speed else "–",
        _size((record.get("memory") or {}).get("total")),
    ]


def sort_key(record: dict) -> tuple:
    """Per host and model: the reference first, then by bits per weight of the quant, then by size."""
    return (
        record.get("host", ""),
        record.get("model_name", ""),
        not record.get("is_reference"),
        -BITS_PER_WEIGHT.get(record.get("quant", ""), 0.0),
        -(record.get("size_bytes") or 0),
    )


def rows(records: list[dict]) -> list[list[str]]:
    return [row(r) for r in sorted(records, key=sort_key)]


def table(records: list[dict], german: bool = False) -> str:
    """A plain-text table, one line per host and file, largest file first."""
    header = HEADERS_DE if german else HEADERS
    body = rows(records)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(records: list[dict]) -> str:
    """The same table in Markdown (for a slide or the closing note of a measurement)."""
    body = rows(records)
    lines = ["| " + " | ".join(HEADERS_DE) + " |", "|" + "---|" * len(HEADERS_DE)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)
