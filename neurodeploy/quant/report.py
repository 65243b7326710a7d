"""Per-layer quantization report as JSON and as a table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .quantizer import QuantizationResult

COLUMNS = [
    ("layer", lambda r: str(r.index)),
    ("kind", lambda r: r.kind),
    ("shape", lambda r: "x".join(map(str, r.shape))),
    ("scale", lambda r: f"{r.scale:.4g}"),
    ("w_exp", lambda r: str(r.weight_exp) + (f"/{r.recurrent_weight_exp}" if r.recurrent_weight_exp is not None else "")),
    ("vth", lambda r: str(r.vth)),
    ("du/dv", lambda r: f"{r.du}/{r.dv}"),
    ("w clip %", lambda r: f"{100 * r.weight_clip_fraction:.2f}"),
    ("w err %", lambda r: f"{100 * r.weight_rel_error:.2f}"),
    ("levels", lambda r: str(r.weight_levels_used)),
    ("vth err %", lambda r: f"{100 * r.threshold_rel_error:.3f}"),
    ("leak", lambda r: f"{r.leak_float:.4f}->{r.leak_fixed:.4f}"),
    ("gain spread %", lambda r: "" if r.gain_spread is None else f"{100 * r.gain_spread:.1f}"),
]


def report_dict(result: QuantizationResult) -> dict:
    """Everything about a quantization as plain JSON-able data."""
    return {
        "profile": result.network.profile,
        "time_steps": result.network.time_steps,
        "input_encoding": dataclasses.asdict(result.network.input_encoding),
        "layers": [dataclasses.asdict(r) for r in result.layers],
        "resources": result.resources,
    }


def report_markdown(result: QuantizationResult) -> str:
    """The per-layer table in Markdown, plus notes."""
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(f(r) for _, f in COLUMNS) + " |" for r in result.layers]
    notes = [f"- layer {r.index}: {n}" for r in result.layers for n in r.notes]
    res = result.resources
    text = [f"Quantized for profile `{result.network.profile}`; input {result.network.input_encoding.kind} "
            f"({result.network.input_encoding.bits} bit); {res['cores']} of {res['cores_available']} cores.", "",
            head, sep, *rows]
    if notes:
        text += ["", "Notes:", *notes]
    return "\n".join(text) + "\n"


def print_report(result: QuantizationResult) -> None:
    """Print the per-layer table with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"quantization for {result.network.profile} ({result.resources['cores']} cores)")
    for name, _ in COLUMNS:
        table.add_column(name, justify="right")
    for r in result.layers:
        table.add_row(*(f(r) for _, f in COLUMNS))
    console = Console()
    console.print(table)
    for r in result.layers:
        for note in r.notes:
            console.print(f"[yellow]layer {r.index}: {note}")


def write_report(result: QuantizationResult, folder: Path) -> None:
    """``quantization.json`` and ``quantization.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quantization.json").write_text(json.dumps(report_dict(result), indent=1))
    (folder / "quantization.md").write_text(report_markdown(result))
