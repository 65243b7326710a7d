"""Energy and latency of one inference on the chip, estimated from the activity a backend counted.

From a run (:class:`~neurodeploy.backends.base.RunResult`: spikes per layer; the
inputs: non-zero input values, or netx's input-population spikes) the estimate
counts, per inference:

* synaptic operations = spikes x mean fan-out (non-zero synapses each spike of
  a population drives in the next one and, recurrent, in itself:
  :func:`neurodeploy.quant.fit.mean_fan_out`);
* neuron updates = neurons x time steps (every compartment is updated every
  step, spiking or not);
* spike messages = spikes (each crossing ``hops_per_spike`` mesh hops);

and prices them with the profile's per-operation costs (``energy:`` of
``hw_profiles/*.yaml``: Davies et al. 2018's Loihi measurements, with their
sources and the assumptions for Loihi 2). Time per step is the busiest core's
work (its neurons' updates and its share of the synaptic operations, the core
mapping of :mod:`neurodeploy.quant.fit`) divided by the profile's speedup,
plus a barrier synchronisation; latency = time steps x time per step, and the
static power over that latency is added to the energy.

Every figure is a range ``[low, high]``: the low end takes every cost at its
low bound, the high end at its high bound. It is a model, good to an order of
magnitude: :data:`PILOTNET_LIF_LOIHI2` is lava-dl's measurement of PilotNet LIF
on Loihi 2, and :func:`compare_with_published` says how far the estimate is
from it (README, "Does it fit, and what does it cost").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from ..ir import Network
from ..quant.fit import FitReport, fit_network, mean_fan_out
from ..quant.profile import HardwareProfile

# lava-dl's PilotNet LIF benchmark on Loihi 2 (the Lava compiler's mapping, the profiler's power and time):
# tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb, lava-nc/lava-dl commit 12f04021976730 (the
# notebook's recorded outputs; kp_build partition, one frame repeated for 10,000 steps, 16 steps per frame).
PILOTNET_LIF_LOIHI2 = {
    "source": "lava-nc/lava-dl tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb "
              "(commit 12f0402197673099a99a2805c6c393ef7065318c, recorded outputs)",
    "steps_per_inference": 16,
    "throughput_fps": 342.29,
    "total_power_w": 0.826347,
    "static_power_w": 0.352063,
    "dynamic_power_w": 0.474284,
    "total_energy_uj": 2414.157,
    "dynamic_energy_uj": 1385.611,
    "cores": 74,
}


@dataclass
class Activity:
    """What one inference does, on average over samples."""

    input_events: float          # non-zero input values (graded or spikes), or the input population's spikes
    layer_spikes: list           # spikes of every layer
    steps: int                   # time steps of one inference


def activity_of(result, input_events, steps: Optional[int] = None) -> Activity:
    """:class:`Activity` of a :class:`~neurodeploy.backends.base.RunResult` (all its samples' mean).

    ``input_events``: per sample (array) or their mean; ``steps``: time steps per inference (default
    every simulated step, ``time_steps + latency``)."""
    counts = np.asarray(result.spike_counts, dtype=np.float64)
    return Activity(float(np.mean(input_events)), counts.mean(0).tolist(),
                    int(steps if steps is not None else result.total_steps))


@dataclass
class EnergyEstimate:
    """Energy and latency of one inference; every figure a ``[low, high]`` range."""

    profile: str
    time_steps: int
    synaptic_ops: float
    neuron_updates: float
    spikes: float
    energy_uj: list
    dynamic_energy_uj: list
    static_energy_uj: list
    time_per_step_us: list
    latency_us: list
    busiest_core: str
    fits: bool
    assumptions: list
    sources: dict

    def to_dict(self) -> dict:
        return asdict(self)


ASSUMPTIONS = [
    "per-operation costs are Davies et al. 2018's Loihi 1 measurements (profile energy: section); Loihi 2's "
    "are not published",
    "every neuron is updated every time step; synaptic ops = spikes x mean non-zero fan-out",
    "a layer's synaptic ops are spread over its cores in proportion to their synapses",
    "host I/O, the embedded x86 cores, learning and off-chip traffic are not counted",
]


def _pair(lo: float, hi: float) -> list:
    return [float(lo), float(hi)]


def estimate_energy(network: Network, profile: HardwareProfile, activity: Activity,
                    fit: Optional[FitReport] = None) -> Optional[EnergyEstimate]:
    """The energy and latency of one inference of ``network`` doing ``activity`` on ``profile``'s chip.

    None when the profile declares no ``energy:`` costs."""
    costs = profile.energy
    if costs is None:
        return None
    fit = fit if fit is not None else fit_network(network, profile)
    fan = mean_fan_out(network)
    spikes = np.asarray(activity.layer_spikes, dtype=np.float64)
    if spikes.size != len(network.layers):
        raise ValueError(f"activity has {spikes.size} layers' spikes, the network {len(network.layers)} layers")
    sources = np.concatenate([[activity.input_events], spikes])
    ops_from = sources * np.asarray(fan)                # synaptic ops driven by each source population
    synops = float(ops_from.sum())
    neurons = sum(x.neurons for x in fit.layers)
    updates = float(neurons * activity.steps)
    n_spikes = float(sources.sum())

    def energy(i: int) -> float:
        return (synops * costs.synaptic_op_pj[i] + updates * costs.neuron_update_pj[i]
                + n_spikes * (costs.spike_pj[i] + costs.hops_per_spike[i] * costs.hop_pj[i])) * 1e-6   # uJ

    # synaptic ops into each population per step: what the population before it (and itself) sends
    names = [x.name for x in fit.layers]
    has_input_pop = fit.layers and fit.layers[0].kind == "input"
    into = {}
    for li, name in enumerate(names):
        k = li - (1 if has_input_pop else 0)         # layer index (-1: the input population)
        if k < 0:
            into[name] = 0.0
            continue
        # (a recurrent layer's own ops are in the fan-out of its spikes, so they land on the next layer's cores
        # here: an error of the time model only, not of the energy)
        into[name] = float(sources[k] * np.asarray(fan)[k]) / max(1, activity.steps)
    conn = {name: sum(c.connections for c in fit.cores if c.population == name) for name in names}

    def step_ns(i: int, speed: float) -> tuple[float, str]:
        worst, where = 0.0, ""
        for c in fit.cores:
            share = into[c.population] * (c.connections / conn[c.population] if conn[c.population] else 0.0)
            t = c.neurons * costs.neuron_update_ns[i] + share * costs.synaptic_op_ns[i]
            if t > worst:
                worst, where = t, f"core {c.core} ({c.population})"
        return worst / speed + costs.barrier_ns[i], where

    t_lo, where = step_ns(0, costs.speedup[1])
    t_hi, _ = step_ns(1, costs.speedup[0])
    lat = _pair(activity.steps * t_lo * 1e-3, activity.steps * t_hi * 1e-3)          # us
    static = _pair(costs.static_power_w[0] * lat[0], costs.static_power_w[1] * lat[1])  # W x us = uJ
    dyn = _pair(energy(0), energy(1))
    return EnergyEstimate(profile.name, int(activity.steps), synops, updates, n_spikes,
                          _pair(dyn[0] + static[0], dyn[1] + static[1]), dyn, static,
                          _pair(t_lo * 1e-3, t_hi * 1e-3), lat, where, fit.fits, list(ASSUMPTIONS),
                          dict(costs.sources))


def compare_with_published(estimate: EnergyEstimate, published: dict = PILOTNET_LIF_LOIHI2) -> dict:
    """How far ``estimate`` is from a published measurement: measured / estimated, per figure.

    A ratio range containing 1 means the measurement lies inside the estimate."""
    time_per_step_us = 1e6 / (published["throughput_fps"] * published["steps_per_inference"])

    def ratio(measured: float, rng: Sequence[float]) -> list:
        return [measured / rng[1] if rng[1] else float("inf"), measured / rng[0] if rng[0] else float("inf")]

    return {
        "source": published["source"],
        "dynamic_energy_uj": {"measured": published["dynamic_energy_uj"], "estimated": estimate.dynamic_energy_uj,
                              "measured_over_estimated": ratio(published["dynamic_energy_uj"],
                                                               estimate.dynamic_energy_uj)},
        "total_energy_uj": {"measured": published["total_energy_uj"], "estimated": estimate.energy_uj,
                            "measured_over_estimated": ratio(published["total_energy_uj"], estimate.energy_uj)},
        "time_per_step_us": {"measured": time_per_step_us, "estimated": estimate.time_per_step_us,
                             "measured_over_estimated": ratio(time_per_step_us, estimate.time_per_step_us)},
    }


def _rng(r: Sequence[float], unit: str, digits: int = 3) -> str:
    return f"{r[0]:.{digits}g} to {r[1]:.{digits}g} {unit}"


def energy_markdown(est: EnergyEstimate) -> str:
    """The estimate in Markdown: ranges, counts, assumptions."""
    lines = [
        f"Estimated per inference on `{est.profile}` ({est.time_steps} time steps; a model from published "
        f"per-operation costs, not a measurement):", "",
        "| | low | high |", "|---|---:|---:|",
        f"| energy (uJ) | {est.energy_uj[0]:.4g} | {est.energy_uj[1]:.4g} |",
        f"| of which dynamic (uJ) | {est.dynamic_energy_uj[0]:.4g} | {est.dynamic_energy_uj[1]:.4g} |",
        f"| of which static (uJ) | {est.static_energy_uj[0]:.4g} | {est.static_energy_uj[1]:.4g} |",
        f"| time per step (us) | {est.time_per_step_us[0]:.4g} | {est.time_per_step_us[1]:.4g} |",
        f"| latency (us) | {est.latency_us[0]:.4g} | {est.latency_us[1]:.4g} |", "",
        f"From {est.synaptic_ops:.4g} synaptic ops, {est.neuron_updates:.4g} neuron updates and {est.spikes:.4g} "
        f"spikes per inference; busiest core: {est.busiest_core}."
        + ("" if est.fits else " The network does not fit the chip (see the fit report): the estimate assumes "
                               "its mapping anyway."), "",
        "Assumptions: " + "; ".join(est.assumptions) + ".",
    ]
    return "\n".join(lines) + "\n"


def print_energy(est: EnergyEstimate, console=None) -> None:
    """The estimate on the terminal: always ranges."""
    from rich.console import Console

    console = console or Console()
    console.print(f"energy per inference on {est.profile}: {_rng(est.energy_uj, 'uJ')} (dynamic "
                  f"{_rng(est.dynamic_energy_uj, 'uJ')}); latency {_rng(est.latency_us, 'us')} over "
                  f"{est.time_steps} steps ({_rng(est.time_per_step_us, 'us')} per step); an estimate from "
                  f"published per-operation costs", markup=False, highlight=False)
