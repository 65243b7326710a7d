"""The Lava validation subset as work units: sample ranges run on Lava and compared with the emulator.

A Lava subset (the pipeline's, or a sweep point's) is split into contiguous
sample ranges (:func:`lava_range_tasks`); each range is one task
(:func:`lava_range`): the range's encoded inputs and the emulator's result on
them in, per-sample Lava predictions, spike totals and agreement out. The
sweep's network is compiled once per worker and kept for all the ranges that
worker runs (:class:`~neurodeploy.backends.lava.LavaSession`). :func:`merge_lava_ranges` puts the
ranges back together in sample order, so the numbers are those of one Lava
run over the whole subset, whatever the split.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..backends import RunResult, run_network
from ..executors import Task, split_range
from .agreement import first_difference


def emulator_slice(emu: RunResult, start: int, stop: int) -> dict:
    """What a Lava range needs of the emulator's result on samples ``start:stop`` (plain arrays)."""
    return {"output_spikes": np.ascontiguousarray(emu.output_spikes[start:stop]),
            "spike_counts": np.ascontiguousarray(emu.spike_counts[start:stop]),
            "output_v": None if emu.output_v is None else np.ascontiguousarray(emu.output_v[start:stop]),
            "latency": emu.latency, "time_steps": emu.time_steps, "readout": emu.readout}


def _on_worker_session(network, values: np.ndarray) -> RunResult:
    """``values`` on this worker's Lava session of ``network`` (compiled by the first range it runs, kept for
    the rest of the sweep: :func:`neurodeploy.executors.worker_resource`); a failed run drops the session,
    so a retry compiles afresh."""
    from ..backends.lava import LavaSession
    from ..executors import drop_worker_resource, worker_resource

    key = ("lava-session", id(network))
    session = worker_resource(key, lambda: LavaSession(network))
    try:
        return session.run(values, record_spikes=True)
    except BaseException:
        drop_worker_resource(key)
        raise


def lava_range(network, values: np.ndarray, emulator: dict, start: int, stop: int, step_noise=None,
               reuse: bool = False) -> dict:
    """Samples ``start:stop`` (``values``: their encoded inputs) on Lava, compared with the emulator's
    result on them (``emulator``: :func:`emulator_slice`); JSON-able, sample ids are data-set indices.

    ``reuse`` (``network`` is the sweep's shared one, the same object for every task on a worker, and there
    is no step noise): run on the worker's compiled session instead of compiling a graph for this range."""
    ids = np.arange(start, stop)
    if reuse and step_noise is None:
        lava = _on_worker_session(network, values)
    else:
        lava = run_network(network, values, backend="lava", step_noise=step_noise, record_spikes=True,
                           sample_ids=ids)
    emu = RunResult(emulator["output_spikes"], emulator["spike_counts"], None, None,
                    latency=emulator["latency"], time_steps=emulator["time_steps"], readout=emulator["readout"],
                    output_v=emulator["output_v"])
    diff = first_difference(network, values, emu, lava, step_noise=step_noise, sample_ids=ids)
    return {"start": int(start), "stop": int(stop),
            "predictions": [int(p) for p in lava.predictions()],
            "spikes": [int(s) for s in lava.spike_counts.sum(1)],
            "same_output": [bool(s) for s in np.all(lava.output_spikes == emu.output_spikes, axis=(1, 2))],
            "same_counts": [bool(s) for s in np.all(lava.spike_counts == emu.spike_counts, axis=1)],
            "difference": diff}


def merge_lava_ranges(parts: list[dict]) -> dict:
    """The ranges of one subset (any order) as one: arrays in sample order and the first difference
    (the lowest sample's), its counts summed over the ranges."""
    parts = sorted(parts, key=lambda p: p["start"])
    out = {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in
           ("predictions", "spikes", "same_output", "same_counts")}
    out["predictions"] = out["predictions"].astype(np.int64)
    out["spikes"] = out["spikes"].astype(np.int64)
    out["samples"] = int(sum(p["stop"] - p["start"] for p in parts))
    diffs = [p["difference"] for p in parts if p["difference"]]
    diff: Optional[dict] = None
    if diffs:
        diff = dict(diffs[0])
        diff["samples_differing"] = int(sum(d["samples_differing"] for d in diffs))
        diff["samples_compared"] = out["samples"]
    out["difference"] = diff
    return out


def _pipeline_range(shared: dict, start: int, stop: int, values: np.ndarray, emulator: dict) -> dict:
    """Work unit of the pipeline's Lava subset (the deployed network is ``shared['network']``)."""
    return lava_range(shared["network"], values, emulator, start, stop, reuse=True)


def lava_range_tasks(values: np.ndarray, emulator: dict, n: int, parts: int, fn=_pipeline_range,
                     key: tuple = (), coords: Optional[dict] = None, **params) -> list[Task]:
    """The first ``n`` samples as at most ``parts`` range tasks of ``fn(shared, start, stop, values,
    emulator, **params)`` (``emulator``: :func:`emulator_slice` of at least those samples); each task
    carries its own samples only."""
    out = []
    for a, b in split_range(n, parts):
        emu = {k: (v[a:b] if isinstance(v, np.ndarray) else v) for k, v in emulator.items()}
        out.append(Task(key=(*key, "lava", a, b), fn=fn,
                        params={**params, "start": a, "stop": b, "values": np.ascontiguousarray(values[a:b]),
                                "emulator": emu},
                        coords={**(coords or {}), "backend": "lava", "samples": f"{a}..{b - 1}"}))
    return out
