"""Does a fixed-point network fit the chip? Map it onto cores the way a Loihi compiler must.

Every population (netx's input neurons when the network has them, then every
layer) is split into cores of consecutive neurons; a conv layer's neurons are
taken in (x, y, channel) order, so a core holds a strip of columns with every
channel (how Lava's Loihi 2 compiler tiles PilotNet's conv layers). Per core the
mapper counts, from the non-zero synapses the network really has:

* neurons (``resources.neurons_per_core``);
* synaptic memory in bits, the cheapest of the encodings the profile declares
  (``resources.synapse_encodings``): ``dense`` = input axons x neurons x weight
  bits, ``sparse`` = non-zero synapses x (weight bits + ``index_bits``),
  ``conv_shared`` = output channels in the core x kernel size x weight bits;
  and the synapse count (``resources.synapses_per_core``);
* fan-in: the input axons, one per distinct source neuron that reaches the core
  (``resources.fan_in_axons_per_core``);
* fan-out: the output axons, one per (neuron, destination core) pair
  (``resources.fan_out_axons_per_core``), which depends on how the next layer
  is split, so layers are mapped from the last to the first;

and per neuron its fan-in (``resources.max_fan_in``). A population takes the
fewest cores on which all of these hold. Cores are then packed in order onto
chips (``cores_per_chip``, ``neurons_per_chip``, ``synapses_per_chip``) and the
chips needed are compared with ``resources.chips``.

This is a model of a compiler, not Intel's (closed) one: it ignores neuron-state
memory, axon-routing table formats and the host I/O cores, so it can say "fits"
where the real compiler needs more cores (PilotNet LIF: see README, "Does it fit,
and what does it cost"). :func:`fit_network` returns a :class:`FitReport`;
:func:`check_fit` raises :class:`FitError` naming the limiting resource with
needed vs available.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..errors import NeurodeployError
from ..ir import ConvLayer, DenseLayer, Network
from .profile import HardwareProfile, Resources

# (resource key, profile field, words) of every per-core limit
CORE_LIMITS = (
    ("neurons", "neurons_per_core", "neurons per core"),
    ("synapses", "synapses_per_core", "stored synapses per core"),
    ("memory_bits", "synaptic_memory_bits_per_core", "synaptic memory bits per core"),
    ("axons_in", "fan_in_axons_per_core", "fan-in axons per core"),
    ("axons_out", "fan_out_axons_per_core", "fan-out axons per core"),
)


class FitError(NeurodeployError, ValueError):
    """The network does not fit the profile's chip; the message names the limiting resource."""


@dataclass
class Population:
    """One group of neurons the mapper places: its synapses from the population before (and itself)."""

    name: str
    kind: str
    neurons: int
    weight_bits: int
    rows: np.ndarray            # int64 target neuron of every non-zero synapse (this population's indices)
    cols: np.ndarray            # int64 source: index into the previous population, or n_prev + own index
    n_prev: int
    order: np.ndarray           # mapping order: position -> neuron index
    kernel_per_channel: int = 0  # conv: weights of one output channel (shared encoding)
    channel_of: Optional[np.ndarray] = None  # conv: output channel of every neuron
    recurrent: bool = False

    @property
    def synapses(self) -> int:
        return int(self.rows.size)


def _conv_population(layer: ConvLayer, name: str) -> Population:
    w = np.asarray(layer.weight)
    c_out, c_in_g, kh, kw = w.shape
    _, H, W = (int(s) for s in layer.in_shape)
    oc, oh, ow = layer.out_shape
    (sy, sx), (py, px), (dy, dx) = layer.stride, layer.padding, layer.dilation
    co, ci, ky, kx = np.nonzero(w)
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    oy, ox = oy.reshape(-1, 1), ox.reshape(-1, 1)
    iy = oy * sy - py + ky[None, :] * dy
    ix = ox * sx - px + kx[None, :] * dx
    ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    group = co // (c_out // layer.groups)
    cin = group * c_in_g + ci
    rows = (co[None, :] * oh * ow + oy * ow + ox)[ok]
    cols = (cin[None, :] * H * W + iy * W + ix)[ok]
    n = oc * oh * ow
    idx = np.arange(n).reshape(oc, oh, ow)
    order = idx.transpose(2, 1, 0).reshape(-1)        # x slowest, then y, then channel: column strips
    return Population(name, "conv", n, int(layer.num_weight_bits), rows.astype(np.int64), cols.astype(np.int64),
                      int(np.prod(layer.in_shape)), order, kernel_per_channel=int(c_in_g * kh * kw),
                      channel_of=np.repeat(np.arange(oc), oh * ow))


def _dense_population(layer: DenseLayer, name: str) -> Population:
    w = np.asarray(layer.weight)
    n, n_prev = w.shape
    rows, cols = np.nonzero(w)
    rec = layer.weight_rec is not None
    if rec:
        rr, rc = np.nonzero(np.asarray(layer.weight_rec))
        rows, cols = np.concatenate([rows, rr]), np.concatenate([cols, rc + n_prev])
    return Population(name, layer.kind, int(n), int(layer.num_weight_bits), rows.astype(np.int64),
                      cols.astype(np.int64), int(n_prev), np.arange(n), recurrent=rec)


def populations(network: Network) -> list[Population]:
    """The network's populations in order: netx's input neurons (if any), then every layer."""
    out = []
    if network.input_neurons is not None:
        n = int(np.prod(network.input_shape))
        empty = np.zeros(0, np.int64)
        order = np.arange(n)
        if len(network.input_shape) == 3:
            order = order.reshape(network.input_shape).transpose(2, 1, 0).reshape(-1)
        out.append(Population("input", "input", n, 0, empty, empty, 0, order))
    for i, layer in enumerate(network.layers):
        name = layer.name or f"layer{i}"
        out.append(_conv_population(layer, name) if isinstance(layer, ConvLayer) else _dense_population(layer, name))
    return out


def mean_fan_out(network: Network) -> list[float]:
    """Non-zero synapses each spike of population p drives in population p + 1 (and itself, recurrent), per
    source neuron on average; entry 0 is for the network's input (values or netx's input neurons).

    One entry per layer plus one for the input: ``[input, layer0, ..., layer_last]`` (the last is 0)."""
    pops = [p for p in populations(network) if p.kind != "input"]
    n_in = int(np.prod(network.input_shape))
    def feed(p: Population) -> int:            # synapses from the population before (not its own recurrent ones)
        return int(np.sum(p.cols < p.n_prev))

    out = [feed(pops[0]) / max(1, n_in) if pops else 0.0]
    for i, p in enumerate(pops):
        nxt = feed(pops[i + 1]) / max(1, p.neurons) if i + 1 < len(pops) else 0.0
        own = int(np.sum(p.cols >= p.n_prev)) / max(1, p.neurons) if p.recurrent else 0.0
        out.append(nxt + own)
    return out


@dataclass
class CoreUse:
    """What one core holds."""

    core: int
    chip: int
    population: str
    neurons: int
    synapses: int                    # stored entries of its encoding (a shared conv kernel counts once)
    connections: int                 # non-zero synapses into its neurons (each one a synaptic op per spike)
    memory_bits: int
    encoding: str
    axons_in: int
    axons_out: int


@dataclass
class LayerFit:
    """How one population was mapped."""

    name: str
    kind: str
    neurons: int
    synapses: int                    # non-zero connections into it
    weight_bits: int
    cores: int
    max_fan_in: int
    encoding: str
    memory_bits: int                 # all its cores together
    limited_by: str                  # the resource that set its core count
    problem: Optional[str] = None


@dataclass
class FitReport:
    """The mapping of a network onto a profile's cores and chips; ``fits`` and, if not, ``problems``."""

    profile: str
    fits: bool
    layers: list[LayerFit]
    cores: list[CoreUse]
    total_cores: int
    chips_needed: int
    chips_available: int
    cores_per_chip: int
    utilisation: dict               # resource -> {"used", "available", "fraction", "where"}
    tightest: Optional[dict]
    problems: list[str] = field(default_factory=list)

    @property
    def limiting(self) -> Optional[str]:
        """The first problem: the limiting resource with needed vs available (None when it fits)."""
        return self.problems[0] if self.problems else None

    def to_dict(self, per_core: bool = True) -> dict:
        d = asdict(self)
        if not per_core:
            d.pop("cores")
        return d

    def summary(self) -> dict:
        """The short form reports carry: cores, chips, the tightest resource, and what does not fit."""
        return {"profile": self.profile, "fits": self.fits, "cores": self.total_cores,
                "chips": self.chips_needed, "chips_available": self.chips_available,
                "cores_per_chip": self.cores_per_chip, "tightest": self.tightest, "problems": self.problems,
                "layers": [{"name": x.name, "neurons": x.neurons, "synapses": x.synapses, "cores": x.cores,
                            "encoding": x.encoding, "limited_by": x.limited_by} for x in self.layers]}


def _split(n: int, k: int) -> np.ndarray:
    """Core of every mapping position when n neurons go onto k cores of ceil(n/k) (the last may be smaller)."""
    size = math.ceil(n / k)
    return np.arange(n) // size


def _core_of(pop: Population, k: int) -> np.ndarray:
    core_of = np.empty(pop.neurons, np.int64)
    core_of[pop.order] = _split(pop.neurons, k)
    return core_of


def _per_core(pop: Population, k: int, res: Resources, next_pop: Optional[Population],
              next_core_of: Optional[np.ndarray]) -> dict:
    """Per-core neurons, synapses, memory bits (+ encoding), input and output axons for k cores."""
    core_of = _core_of(pop, k)
    ncores = int(core_of.max()) + 1 if pop.neurons else 0
    neurons = np.bincount(core_of, minlength=ncores)
    syn_core = core_of[pop.rows] if pop.rows.size else np.zeros(0, np.int64)
    synapses = np.bincount(syn_core, minlength=ncores)
    # input axons: distinct (core, source) pairs
    if pop.rows.size:
        pairs = np.unique(syn_core * (pop.n_prev + pop.neurons) + pop.cols)
        axons_in = np.bincount(pairs // (pop.n_prev + pop.neurons), minlength=ncores)
    else:
        axons_in = np.zeros(ncores, np.int64)
    # memory: the cheapest declared encoding per core; (stored entries, bits per entry) of each
    bits = pop.weight_bits
    options = {}
    if "dense" in res.synapse_encodings:
        options["dense"] = (axons_in * neurons, bits)
    if "sparse" in res.synapse_encodings:
        options["sparse"] = (synapses, bits + res.index_bits)
    if "conv_shared" in res.synapse_encodings and pop.channel_of is not None:
        m = int(pop.channel_of.max()) + 1
        ch = np.unique(core_of * m + pop.channel_of)
        options["conv_shared"] = (np.bincount(ch // m, minlength=ncores) * pop.kernel_per_channel, bits)
    names = list(options) or ["sparse"]
    if not options:
        options["sparse"] = (synapses, bits + res.index_bits)
    entries = np.stack([options[n][0] for n in names]).astype(np.int64)
    table = np.stack([options[n][0] * options[n][1] for n in names]).astype(np.int64)
    best = np.argmin(table, axis=0)
    cols = np.arange(ncores)
    memory = np.where(synapses > 0, table[best, cols], 0)
    stored = np.where(synapses > 0, entries[best, cols], 0)
    encoding = [names[b] for b in best]
    # output axons: distinct destination cores of every neuron, summed per core
    out_per_neuron = np.zeros(pop.neurons, np.int64)
    if next_pop is not None and next_pop.rows.size:
        src = next_pop.cols < next_pop.n_prev
        dst_core = next_core_of[next_pop.rows[src]]
        pair = np.unique(next_pop.cols[src] * (int(dst_core.max()) + 1) + dst_core)
        np.add.at(out_per_neuron, pair // (int(dst_core.max()) + 1), 1)
    if pop.recurrent:
        own = pop.cols >= pop.n_prev
        srcn = pop.cols[own] - pop.n_prev
        dst = core_of[pop.rows[own]]
        pair = np.unique(srcn * ncores + dst)
        np.add.at(out_per_neuron, pair // ncores, 1)
    axons_out = np.bincount(core_of, weights=out_per_neuron, minlength=ncores).astype(np.int64)
    return {"neurons": neurons, "synapses": stored, "connections": synapses, "memory_bits": memory,
            "encoding": encoding,
            "axons_in": axons_in, "axons_out": axons_out, "core_of": core_of}


def _violations(use: dict, res: Resources) -> list[tuple[str, int, int, str]]:
    """(resource, needed, available, words) of every per-core limit some core exceeds."""
    out = []
    for key, attr, words in CORE_LIMITS:
        limit = getattr(res, attr)
        if limit is None or not len(use[key]):
            continue
        worst = int(np.max(use[key]))
        if worst > limit:
            out.append((key, worst, int(limit), words))
    return out


def _map_population(pop: Population, res: Resources, next_pop, next_core_of) -> tuple[int, dict, list, str]:
    """Fewest cores (and their use) on which every per-core limit holds; else one core per neuron and why."""
    k_lo = max(1, math.ceil(pop.neurons / res.neurons_per_core))
    use = _per_core(pop, k_lo, res, next_pop, next_core_of)
    bad = _violations(use, res)
    if not bad:
        return k_lo, use, [], "neurons"
    first = bad[0][0]
    k_fail, k = k_lo, k_lo
    while bad and k < pop.neurons:       # doubling, then bisection: the per-core use shrinks with k
        k_fail, k = k, min(pop.neurons, 2 * k)
        use = _per_core(pop, k, res, next_pop, next_core_of)
        bad = _violations(use, res)
    if bad:
        return k, use, bad, first
    lo, hi, best = k_fail, k, use
    while hi - lo > 1:
        mid = (lo + hi) // 2
        u = _per_core(pop, mid, res, next_pop, next_core_of)
        if _violations(u, res):
            lo = mid
        else:
            hi, best = mid, u
    # the resource that forced more cores than the neuron count alone
    return hi, best, [], first


def fit_network(network: Network, profile: HardwareProfile) -> FitReport:
    """Map ``network`` onto ``profile``'s cores and chips; the report says whether and how it fits."""
    res = profile.resources
    pops = populations(network)
    maps: list = [None] * len(pops)
    next_pop, next_core_of = None, None
    problems: list[str] = []
    for i in range(len(pops) - 1, -1, -1):
        pop = pops[i]
        k, use, bad, limited = _map_population(pop, res, next_pop, next_core_of)
        fan_in = int(np.bincount(pop.rows, minlength=pop.neurons).max()) if pop.rows.size else 0
        problem = None
        if fan_in > res.max_fan_in:
            problem = (f"{pop.name}: fan-in of one neuron needs {fan_in} synapses > max_fan_in {res.max_fan_in}")
        for key, need, have, words in bad:
            problem = problem or (f"{pop.name}: {words} needs {need} > {have} available even with one neuron "
                                  f"per core")
        if problem:
            problems.append(problem)
        maps[i] = (k, use, limited, fan_in, problem)
        next_pop, next_core_of = pop, use["core_of"]
    problems.reverse()
    layers, cores = [], []
    for pop, (k, use, limited, fan_in, problem) in zip(pops, maps):
        encs = sorted(set(e for e, s in zip(use["encoding"], use["synapses"]) if s > 0)) or ["-"]
        layers.append(LayerFit(pop.name, pop.kind, pop.neurons, pop.synapses, pop.weight_bits, k, fan_in,
                               "+".join(encs), int(np.sum(use["memory_bits"])), limited, problem))
        for c in range(len(use["neurons"])):
            cores.append(CoreUse(len(cores), 0, pop.name, int(use["neurons"][c]), int(use["synapses"][c]),
                                 int(use["connections"][c]), int(use["memory_bits"][c]), use["encoding"][c] if use["synapses"][c] else "-",
                                 int(use["axons_in"][c]), int(use["axons_out"][c])))
    # chips: cores packed in order, a chip closes when a per-chip limit would be exceeded
    chip, n_c, n_n, n_s = 0, 0, 0, 0
    for core in cores:
        over = (n_c + 1 > res.cores_per_chip
                or (res.neurons_per_chip is not None and n_n + core.neurons > res.neurons_per_chip)
                or (res.synapses_per_chip is not None and n_s + core.synapses > res.synapses_per_chip))
        if over and n_c:
            chip, n_c, n_n, n_s = chip + 1, 0, 0, 0
        core.chip = chip
        n_c, n_n, n_s = n_c + 1, n_n + core.neurons, n_s + core.synapses
    chips = chip + 1 if cores else 0
    total = len(cores)
    total_neurons = sum(c.neurons for c in cores)
    total_syn = sum(c.synapses for c in cores)
    # a single core can exceed a per-chip limit on its own (then no packing helps)
    over_chip = any((res.neurons_per_chip is not None and c.neurons > res.neurons_per_chip)
                    or (res.synapses_per_chip is not None and c.synapses > res.synapses_per_chip) for c in cores)
    if chips > res.chips or over_chip:
        if res.chips == 1 and total > res.cores_per_chip:
            problems.append(f"needs {total} cores > {res.cores_per_chip} cores per chip ("
                            + ", ".join(f"{x.name}: {x.cores}" for x in layers) + ")")
        elif res.chips == 1 and res.neurons_per_chip is not None and total_neurons > res.neurons_per_chip:
            problems.append(f"needs {total_neurons} neurons > {res.neurons_per_chip} neurons per chip")
        elif res.chips == 1 and res.synapses_per_chip is not None and total_syn > res.synapses_per_chip:
            problems.append(f"needs {total_syn} synapses > {res.synapses_per_chip} synapses per chip")
        else:
            problems.append(f"needs {chips} chips > {res.chips} chips (resources.chips; {total} cores, "
                            f"{total_neurons} neurons, {total_syn} synapses)")
    util = _utilisation(cores, res, total, chips, total_neurons, total_syn, layers)
    tightest = max(util.values(), key=lambda u: u["fraction"]) if util else None
    return FitReport(profile.name, not problems, layers, cores, total, chips, res.chips, res.cores_per_chip,
                     util, tightest, problems)


def _utilisation(cores, res: Resources, total, chips, neurons, synapses, layers) -> dict:
    out = {}
    for key, attr, words in CORE_LIMITS:
        limit = getattr(res, attr)
        if limit is None or not cores:
            continue
        worst = max(cores, key=lambda c: getattr(c, key))
        out[key] = {"resource": words, "used": getattr(worst, key), "available": int(limit),
                    "fraction": getattr(worst, key) / limit, "where": f"core {worst.core} ({worst.population})"}
    fan = max(layers, key=lambda x: x.max_fan_in) if layers else None
    if fan is not None:
        out["fan_in"] = {"resource": "synapses into one neuron", "used": fan.max_fan_in,
                         "available": res.max_fan_in, "fraction": fan.max_fan_in / res.max_fan_in,
                         "where": fan.name}
    cap = res.cores_per_chip * res.chips
    out["cores"] = {"resource": f"cores ({res.chips} chip(s) of {res.cores_per_chip})", "used": total,
                    "available": cap, "fraction": total / cap, "where": "network"}
    if res.neurons_per_chip is not None:
        out["neurons_chip"] = {"resource": "neurons on the chip(s)", "used": neurons,
                               "available": res.neurons_per_chip * res.chips,
                               "fraction": neurons / (res.neurons_per_chip * res.chips), "where": "network"}
    if res.synapses_per_chip is not None:
        out["synapses_chip"] = {"resource": "synapses on the chip(s)", "used": synapses,
                                "available": res.synapses_per_chip * res.chips,
                                "fraction": synapses / (res.synapses_per_chip * res.chips), "where": "network"}
    return out


def check_fit(network: Network, profile: HardwareProfile, error: type = FitError) -> FitReport:
    """:func:`fit_network`, raising ``error`` (one line: every limiting resource, needed vs available)."""
    report = fit_network(network, profile)
    if not report.fits:
        raise error(f"the network does not fit profile {profile.name!r}: " + "; ".join(report.problems))
    return report


def _bits(b: int) -> str:
    for unit, size in (("M", 2**20), ("k", 2**10)):
        if b >= size:
            return f"{b / size:.3g}{unit}"
    return str(b)


# short names of the resources, for the tables
SHORT = {"neurons": "neurons", "synapses": "synapses", "memory_bits": "memory", "axons_in": "fan-in",
         "axons_out": "fan-out"}
ENCODING_SHORT = {"dense": "dense", "sparse": "sparse", "conv_shared": "conv", "-": "-"}


def print_fit(report: FitReport, console=None, per_core: bool = True, max_cores: int = 200) -> None:
    """The per-layer and per-core tables (rich, readable in 80 columns), the tightest resource, problems."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"fit on {report.profile}: {report.total_cores} cores, {report.chips_needed} chip(s)",
              box=box.SIMPLE_HEAD, caption="memory: synaptic memory in bits (k = 1024, M = 2**20)")
    for col in ("layer", "kind", "neurons", "synapses", "cores", "memory", "encoding", "limit"):
        t.add_column(col, justify="left" if col in ("layer", "kind", "encoding", "limit") else "right",
                     overflow="fold")
    for x in report.layers:
        enc = "+".join(ENCODING_SHORT.get(e, e) for e in x.encoding.split("+"))
        t.add_row(x.name, x.kind, str(x.neurons), str(x.synapses), str(x.cores), _bits(x.memory_bits), enc,
                  SHORT.get(x.limited_by, x.limited_by))
    console.print(t)
    if per_core:
        c = Table(title="per core" + (f" (first {max_cores})" if len(report.cores) > max_cores else ""),
                  box=box.SIMPLE_HEAD)
        for col in ("core", "chip", "layer", "neurons", "synapses", "memory", "fan-in", "fan-out"):
            c.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")
        for x in report.cores[:max_cores]:
            c.add_row(str(x.core), str(x.chip), x.population, str(x.neurons), str(x.synapses), _bits(x.memory_bits),
                      str(x.axons_in), str(x.axons_out))
        console.print(c)
    if report.tightest:
        u = report.tightest
        style = "yellow" if u["fraction"] > 0.8 else None
        console.print(f"tightest: {u['resource']} {u['used']} of {u['available']} ({100 * u['fraction']:.0f}%) "
                      f"at {u['where']}", style=style, markup=False, highlight=False)
    for p in report.problems:
        console.print(f"does not fit: {p}", style="bold red", markup=False, highlight=False)


def fit_markdown(report: FitReport) -> str:
    """The per-layer table and the verdict in Markdown (for the pipeline and evaluate reports)."""
    verdict = "fits" if report.fits else "DOES NOT FIT: " + "; ".join(report.problems)
    lines = [f"{report.total_cores} cores on {report.chips_needed} chip(s) of {report.cores_per_chip} "
             f"(profile `{report.profile}`, {report.chips_available} chip(s) available): {verdict}.", ""]
    if report.tightest:
        u = report.tightest
        lines += [f"Tightest resource: {u['resource']}, {u['used']} of {u['available']} "
                  f"({100 * u['fraction']:.0f}%) at {u['where']}.", ""]
    lines += ["| layer | kind | neurons | synapses | cores | synaptic memory | encoding | limited by |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    lines += [f"| {x.name} | {x.kind} | {x.neurons} | {x.synapses} | {x.cores} | {_bits(x.memory_bits)} | "
              f"{x.encoding} | {x.limited_by} |" for x in report.layers]
    return "\n".join(lines) + "\n"
