"""Measurements beside the planner's choice, and the quality floor.

``schulki plan`` shows, for each host, its chosen quant with what was measured
for it (perplexity, mean KLD, same top token, generation speed) beside the next
larger and the next smaller quant of the catalog, each only when it was
measured on a machine of the same kind (gpu, cpu or apple). Records are
matched to the catalog by file name: the mirror serves every file under its
catalog name, and ``schulki eval`` stores the file name it measured.

The quality floor: an admin sets "no quant with mean KLD above X"
(``evaluation.max_mean_kld`` or ``schulki plan --max-kld X``), and the planner
leaves out every quant of that model whose measured mean KLD on a machine of
the host's kind is above X. A quant that was never measured there is kept: a
floor can only judge what was measured.
"""

from __future__ import annotations

from collections.abc import Callable

from schulki.models.catalog import Catalog, CatalogError


def _latest(records: list[dict], file_name: str, kind: str) -> dict | None:
    found = [r for r in records if r.get("file") == file_name and r.get("node_kind") == kind]
    return max(found, key=lambda r: r.get("measured_at", "")) if found else None


def measured(records: list[dict], catalog: Catalog, model_id: str, quant: str, kind: str) -> dict | None:
    """The newest record of one catalog quant measured on a machine of this kind, or None."""
    try:
        file_name = catalog.model(model_id).file_for(quant).file
    except CatalogError:
        return None
    return _latest(records, file_name.rsplit("/", 1)[-1], kind)


def quality_floor(records: list[dict], catalog: Catalog, max_mean_kld: float | None) -> Callable[[str, str], frozenset[str]]:
    """A function (model id, node kind) -> quants whose measured mean KLD is above the floor."""

    def excluded(model_id: str, kind: str) -> frozenset[str]:
        if max_mean_kld is None:
            return frozenset()
        try:
            quants = catalog.model(model_id).quants
        except CatalogError:
            return frozenset()
        out = set()
        for quant in quants:
            record = measured(records, catalog, model_id, quant, kind)
            if record is not None and record.get("mean_kld") is not None and record["mean_kld"] > max_mean_kld:
                out.add(quant)
        return frozenset(out)

    return excluded


def _figures(quant: str, record: dict | None, kind: str, role: str) -> str:
    if record is None:
        return f"{quant} ({role}): not measured on a {kind} machine"
    parts = [f"PPL {record['perplexity']:.2f}"]
    if record.get("is_reference"):
        parts.append("KLD reference")
    elif record.get("mean_kld") is not None:
        parts.append(f"KLD {record['mean_kld']:.4f}, same top {record['same_top_percent']:.1f} %")
    if record.get("speed"):
        parts.append(f"{record['speed']['generation_tokens_per_s']:.1f} tok/s")
    return f"{quant} ({role}): " + ", ".join(parts) + f" [{record.get('host', '?')}]"


def measured_beside(plan: dict, kind: str, records: list[dict], catalog: Catalog) -> list[str]:
    """Lines for one host's chat plan: the chosen quant, the next larger and the next smaller, as measured."""
    try:
        quants = catalog.model(plan["model"]).quants
    except CatalogError:
        return []
    if plan["quant"] not in quants:
        return []
    i = quants.index(plan["quant"])
    lines = []
    if i > 0:
        lines.append(_figures(quants[i - 1], measured(records, catalog, plan["model"], quants[i - 1], kind), kind, "larger"))
    lines.append(_figures(plan["quant"], measured(records, catalog, plan["model"], plan["quant"], kind), kind, "chosen"))
    if i + 1 < len(quants):
        lines.append(_figures(quants[i + 1], measured(records, catalog, plan["model"], quants[i + 1], kind), kind, "smaller"))
    return lines


def measurements_text(plans: list[dict], records: list[dict], catalog: Catalog) -> str:
    """The block ``schulki plan`` prints under its table: per host with a chat model, the measured figures."""
    if not records:
        return ""
    out = ["", "Measured (schulki eval), on machines of the same kind:"]
    for hp in plans:
        if hp.get("chat") and not hp.get("error"):
            out.append(f"  {hp['host']}:")
            out += [f"    {line}" for line in measured_beside(hp["chat"], hp["kind"], records, catalog)]
    return "\n".join(out)
