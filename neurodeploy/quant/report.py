"""Per-layer quantization report: JSON and the full Markdown table in files, a compact table on the terminal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..fileio import write_text_atomic
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


# the terminal summary: few, short columns, readable in 80 columns (the full table is in the Markdown report)
TERMINAL_COLUMNS = ("layer", "kind", "shape", "w err %", "w clip %", "vth err %")


def print_report(result: QuantizationResult, console=None, details: Optional[Path] = None) -> None:
    """Print a compact per-layer summary with rich; ``details``: the Markdown file with the full table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"quantization for {result.network.profile} ({result.resources['cores']} cores)")
    columns = [(name, f) for name, f in COLUMNS if name in TERMINAL_COLUMNS]
    for name, _ in columns:
        table.add_column(name, justify="left" if name in ("kind", "shape") else "right", overflow="fold")
    for r in result.layers:
        table.add_row(*(f(r) for _, f in columns))
    console = console or Console()
    console.print(table)
    for r in result.layers:
        for note in r.notes:
            console.print(f"layer {r.index}: {note}", style="yellow", markup=False, highlight=False)
    if details is not None:
        console.print(f"all {len(COLUMNS)} columns per layer in {details}", markup=False, highlight=False)


def report_paths(folder: Path, stem: str = "quantization") -> tuple[Path, Path]:
    """Where :func:`write_report` writes: ``folder/<stem>.json`` and ``folder/<stem>.md``."""
    return Path(folder) / f"{stem}.json", Path(folder) / f"{stem}.md"


def write_report(result: QuantizationResult, folder: Path, stem: str = "quantization") -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.md`` in ``folder`` (each written atomically); return their paths."""
    js, md = report_paths(folder, stem)
    write_text_atomic(js, json.dumps(report_dict(result), indent=1))
    write_text_atomic(md, report_markdown(result))
    return js, md
