"""Emulator vs Lava: every layer's spikes must be identical; a difference is a bug and stops the run.

The comparison is cheap where they agree (spike counts of every layer, the
output spike trains of every sample and, for a potential readout, the output
layer's final v, which the prediction reads); where they do not, the first differing
sample is run again on the emulator with every layer's spikes recorded and
set against Lava's, so the error names the sample, layer and step where the
two part ways.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..backends import RunResult, run_network
from ..ir import Network


class BackendDisagreement(RuntimeError):
    """The emulator and Lava gave different spikes for the same network and inputs (a bug of ours)."""

    def __init__(self, message: str, detail: dict) -> None:
        super().__init__(message)
        self.detail = detail


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy ``correct / n`` (sound at 0% and 100% too)."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # it always holds p; min/max keep it so against rounding at p = 0 or 1
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def first_difference(network: Network, inputs: np.ndarray, emulator: RunResult, lava: RunResult, *,
                     step_noise=None, sample_ids: Optional[np.ndarray] = None) -> Optional[dict]:
    """Where ``emulator`` and ``lava`` (runs of ``network`` on the same ``inputs``) first differ, or None.

    Compares every layer's spike count and the output spike trains of every
    sample, and for a network with a potential readout the output layer's
    final v (``RunResult.output_v``; a result without it counts as differing).
    For the first differing sample, the emulator runs it again with every
    layer's spikes recorded (same step noise and sample id) and the earliest
    step at which any layer differs from Lava's recording is named; where only
    v differs, ``output_v`` names the neurons and both values.
    ``sample_ids``: data-set indices of the samples (default ``0..n-1``).
    """
    n = len(lava.spike_counts)
    ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids)
    counts_differ = np.any(emulator.spike_counts[:n] != lava.spike_counts, axis=1)
    out_differ = np.any(emulator.output_spikes[:n] != lava.output_spikes, axis=(1, 2))
    v_differ = np.zeros(n, dtype=bool)
    potential = network.readout == "potential"
    if potential:
        if emulator.output_v is None or lava.output_v is None:
            v_differ[:] = True
        else:
            v_differ = np.any(emulator.output_v[:n] != lava.output_v, axis=1)
    bad = np.flatnonzero(counts_differ | out_differ | v_differ)
    if bad.size == 0:
        return None
    k = int(bad[0])
    layers = [int(li) for li in np.flatnonzero(emulator.spike_counts[k] != lava.spike_counts[k])]
    detail = {"sample": int(ids[k]), "samples_differing": int(bad.size), "samples_compared": n,
              "layers_with_other_counts": layers, "layer": None, "step": None}
    if potential and v_differ[k]:
        if emulator.output_v is None or lava.output_v is None:
            missing = [name for name, r in (("emulator", emulator), ("Lava", lava)) if r.output_v is None]
            detail["output_v"] = {"missing": missing}
        else:
            e, lv = emulator.output_v[k], lava.output_v[k]
            idx = np.flatnonzero(e != lv)[:8]
            detail["output_v"] = {"neurons": [int(i) for i in idx], "emulator": [int(e[i]) for i in idx],
                                  "lava": [int(lv[i]) for i in idx]}
    if lava.layer_spikes is not None:
        again = run_network(network, inputs[k:k + 1], backend="emulator", record_spikes=True,
                            step_noise=step_noise, sample_ids=ids[k:k + 1])
        best = None
        for li, (e, lv) in enumerate(zip(again.layer_spikes, lava.layer_spikes)):
            steps = np.flatnonzero(np.any(e[0] != lv[k], axis=1))
            if steps.size and (best is None or steps[0] < best[1]):
                best = (li, int(steps[0]))
        if best is not None:
            li, s = best
            e, lv = again.layer_spikes[li][0, s], lava.layer_spikes[li][k, s]
            detail.update(layer=li, step=s, neurons=[int(i) for i in np.flatnonzero(e != lv)[:8]],
                          emulator_spikes_at_step=int(e.sum()), lava_spikes_at_step=int(lv.sum()))
    return detail


def describe_difference(detail: dict, context: str = "") -> str:
    """One line naming where the emulator and Lava part ways."""
    where = f"sample {detail['sample']}"
    if detail.get("layer") is not None:
        where += (f", layer {detail['layer']}, step {detail['step']} (emulator {detail['emulator_spikes_at_step']} "
                  f"spikes, Lava {detail['lava_spikes_at_step']}; neurons {detail['neurons']})")
    elif detail["layers_with_other_counts"]:
        where += f", layers {detail['layers_with_other_counts']}"
    ov = detail.get("output_v")
    if ov is not None:
        if "missing" in ov:
            where += f" (no output layer v from {' and '.join(ov['missing'])})"
        else:
            where += (f", output layer's final v (neurons {ov['neurons']}: emulator {ov['emulator']}, "
                      f"Lava {ov['lava']})")
    return (f"the emulator and Lava disagree{' on ' + context if context else ''}: first at {where}; "
            f"{detail['samples_differing']} of {detail['samples_compared']} samples differ. This is a bug in "
            f"neurodeploy; please report it with this line")
