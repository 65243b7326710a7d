"""Where a deployed net loses accuracy: the chip's timing or the fixed-point arithmetic.

On the chip every synaptic layer adds one step of delay and neuron biases act
from step 0, so layer ``l`` integrates its bias for ``l + 1`` steps before its
first input arrives and keeps integrating after the last. This runs each
run's deployable float model twice on the same inputs: as trained (all
layers in step) and with the chip's timing (one step of delay per synaptic
layer, ``T + L`` steps, biases throughout, readout as the chip reads its
potential), next to the fixed-point accuracy of the method study. The first
gap is the timing's, the second the arithmetic's.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. $PY benchmarks/chip_timing.py benchmarks/runs/method_study/conv/*

Writes ``benchmarks/results/method_study/chip_timing.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from neurodeploy.data import load_dataset
from neurodeploy.evaluate.deployment import prepare_deployment
from neurodeploy.models.builders import TimeFolded

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command_line, git_revision, machine_info, machine_line, now_iso  # noqa: E402

PROFILE = "noisy-edge"     # the method study's profile
OUT = RESULTS / "method_study" / "chip_timing.md"


def _is_synapse(m: torch.nn.Module) -> bool:
    return isinstance(m, torch.nn.Linear) or (isinstance(m, TimeFolded) and isinstance(m.module, torch.nn.Conv2d))


@torch.no_grad()
def timing_accuracies(run: Path, samples: int = 1000) -> dict:
    """Accuracy of the deployable float model in step and with the chip's timing, on the first test samples."""
    dep = prepare_deployment(run, PROFILE, 0, progress=False, log=lambda m: None)
    model = dep.model.eval()
    data = load_dataset(dep.cfg.data.dataset, seed=dep.cfg.seed, data_dir=dep.cfg.data.data_dir)
    x, y = torch.as_tensor(data.x_test[:samples]), data.y_test[:samples]
    T = dep.time_steps
    mods = list(model.body)
    stateful = list(model.body.stateful_layers)
    L = sum(_is_synapse(m) for m in mods)
    for m in model.modules():   # deployable gains are constant over time: extend them to T + L steps
        g = getattr(m, "gain", None)
        if isinstance(g, torch.nn.Parameter):
            assert bool((g == g[:1]).all()), "the deployable model's gain must be folded"
            m.gain = torch.nn.Parameter(g[:1].expand(T + L, *g.shape[1:]).clone())

    def run_seq(seq: torch.Tensor, chip: bool) -> torch.Tensor:
        state: list = [None] * len(mods)
        for i, m in enumerate(mods):
            if stateful[i]:
                seq, state[i] = m(seq, state[i])
            else:
                seq = m(seq)
                if chip and _is_synapse(m):
                    seq = torch.cat([torch.zeros_like(seq[:1]), seq[:-1]])   # one step of synaptic delay
        return seq

    xq = model.quantize_input(x)
    seq = xq.unsqueeze(0).expand(T, *xq.shape)
    in_step = float((model.logits(run_seq(seq, False)).argmax(1).numpy() == y).mean())
    out = run_seq(torch.cat([seq, seq.new_zeros((L,) + tuple(seq.shape[1:]))]), True)
    if model.readout == "linear":
        # the chip's potential readout sums every step; the quantizer scales the bias by T / (T + L)
        last = [m for m in mods if isinstance(m, torch.nn.Linear)][-1]
        b = last.bias if last.bias is not None else out.new_zeros(out.shape[-1])
        logits = (out - b).sum(0) + b * T
    else:
        logits = out.sum(0)
    chip = float((logits.argmax(1).numpy() == y).mean())
    ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else None
    fixed = None
    if ev is not None:
        fixed = next((r["accuracy"] for r in ev["rows"] if r["view"] == "fixed point" and r["level"] == 0), None)
    return {"run": run.name, "T": T, "L": L, "float": in_step, "chip_timing": chip, "fixed_point": fixed,
            "samples": len(y)}


def main(argv: list[str]) -> None:
    rows = [timing_accuracies(Path(a)) for a in argv]
    lines = ["# Chip timing vs fixed-point arithmetic", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"- command: `{command_line()}`", f"- commit: {git_revision()}",
             f"- machine: {machine_line(machine_info())}", f"- date: {now_iso()}", "",
             "| run | T | layers | float (in step) | float, chip timing | fixed point | timing costs | arithmetic costs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fx = "" if r["fixed_point"] is None else f"{100 * r['fixed_point']:.1f}"
        ar = "" if r["fixed_point"] is None else f"{100 * (r['chip_timing'] - r['fixed_point']):.1f}"
        lines.append(f"| {r['run']} | {r['T']} | {r['L']} | {100 * r['float']:.1f} | {100 * r['chip_timing']:.1f} | "
                     f"{fx} | {100 * (r['float'] - r['chip_timing']):.1f} | {ar} |")
        print(lines[-1])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"written: {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
