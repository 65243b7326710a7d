"""LavaSession: a network compiled on Lava once and run on many calls gives what a graph per call gives
(Lava's own RingBuffer input) and what the emulator gives; its processes stop on close and when a run
fails; a sweep worker compiles the sweep's network once for all its sample ranges."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

from _helpers import small_quantized_model
from neurodeploy.backends import lava as lava_mod
from neurodeploy.backends import run_network
from neurodeploy.backends.base import BackendError
from neurodeploy.backends.lava import LavaSession, run_lava
from neurodeploy.data import load_dataset
from neurodeploy.evaluate.inputs import chip_inputs, encoding_generator
from neurodeploy.evaluate.lava_subset import emulator_slice, lava_range_tasks, merge_lava_ranges
from neurodeploy import executors


@pytest.fixture(scope="module")
def small():
    model, quantized, _ = small_quantized_model("mlp", hidden=(12,))
    data = load_dataset("digits", seed=0)
    net = quantized.network
    values = chip_inputs(model, net, torch.as_tensor(data.x_test[:9]), encoding_generator(0)).values
    return net, values


@pytest.fixture
def compiles(monkeypatch):
    """How many Lava graphs were compiled and started (calls of lava._start)."""
    calls = []
    real = lava_mod._start

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lava_mod, "_start", counted)
    return calls


def _lava_children() -> set:
    return set(multiprocessing.active_children())


def test_one_session_over_several_calls_equals_a_graph_per_call_and_the_emulator(small, compiles):
    net, x = small
    emu = run_network(net, x)
    with LavaSession(net) as session:
        parts = [session.run(x[a:b], record_spikes=True) for a, b in ((0, 1), (1, 4), (4, 9))]
        assert session.runs == 3
    assert len(compiles) == 1                       # compiled once for the three calls
    # the graph run_lava builds with traces still plays the inputs from Lava's RingBuffer
    ring = run_lava(net, x, record_traces=[0])
    assert len(compiles) == 2
    out = np.concatenate([p.output_spikes for p in parts])
    counts = np.concatenate([p.spike_counts for p in parts])
    assert counts.sum() > 0                          # something fired, so equality means something
    for ref in (ring, emu):
        assert np.array_equal(out, ref.output_spikes)
        assert np.array_equal(counts, ref.spike_counts)
    hidden = np.concatenate([p.layer_spikes[0] for p in parts])
    assert np.array_equal(hidden.sum(axis=(1, 2)), emu.spike_counts[:, 0])


def test_a_session_refuses_bad_inputs_and_runs_after_close(small):
    net, x = small
    session = LavaSession(net)
    try:
        session.run(x[:1])
        with pytest.raises(BackendError, match=r"expected \(samples, 4, 1, 8, 8\)"):
            session.run(x[:1, :3])
        assert session.started                      # a refused call leaves the session usable
        assert np.array_equal(session.run(x[:2]).spike_counts, run_network(net, x[:2]).spike_counts)
    finally:
        session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.run(x[:1])


def test_close_stops_the_lava_processes(small):
    net, x = small
    before = _lava_children()
    session = LavaSession(net)
    assert not session.started and _lava_children() == before      # nothing starts before the first run
    session.run(x[:2])
    assert _lava_children() - before                                 # Lava's processes run between calls
    session.close()
    session.close()                                                  # idempotent
    assert _lava_children() <= before


def test_a_failed_run_kills_the_processes_and_closes_the_session(small, monkeypatch):
    net, x = small
    before = _lava_children()
    session = LavaSession(net)
    session.run(x[:1])
    real = lava_mod._read_sample
    seen = []

    def failing(graph, plan, k, *args, **kwargs):
        seen.append(k)
        if len(seen) == 2:
            raise RuntimeError("injected failure while reading a sample")
        return real(graph, plan, k, *args, **kwargs)

    monkeypatch.setattr(lava_mod, "_read_sample", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        session.run(x[:3])
    assert _lava_children() <= before
    with pytest.raises(RuntimeError, match="closed"):
        session.run(x[:1])


def test_a_worker_compiles_the_sweep_network_once_for_all_its_ranges(small, compiles):
    net, x = small
    emu = run_network(net, x)
    whole = run_network(net, x, backend="lava")
    assert len(compiles) == 1
    before = _lava_children()
    tasks = lava_range_tasks(x, emulator_slice(emu, 0, 9), 9, 3)
    assert len(tasks) == 3
    with executors.LocalExecutor() as ex:          # this process: one worker runs the three ranges
        done = ex.run(tasks, {"network": net})
    assert len(compiles) == 2                       # one more graph, for all three ranges
    assert not executors._RESOURCES                 # closed when the sweep ended ...
    assert _lava_children() <= before               # ... with its processes
    merged = merge_lava_ranges([r for _, r in done.ordered()])
    assert np.array_equal(merged["predictions"], whole.predictions())
    assert np.array_equal(merged["spikes"], whole.spike_counts.sum(1))
    assert merged["same_output"].all() and merged["same_counts"].all()


def test_a_range_that_fails_drops_the_session_and_the_retry_compiles_afresh(small, compiles, monkeypatch):
    net, x = small
    emu = run_network(net, x)
    real = LavaSession.run
    failures = []

    def flaky(self, values, **kwargs):
        if not failures:
            failures.append(1)
            self.close(graceful=False)
            raise RuntimeError("injected Lava failure")
        return real(self, values, **kwargs)

    monkeypatch.setattr(LavaSession, "run", flaky)
    tasks = lava_range_tasks(x, emulator_slice(emu, 0, 6), 6, 2)
    with executors.LocalExecutor() as ex:
        done = ex.run(tasks, {"network": net})
    assert not done.failures and len(done.retried) == 1
    assert len(compiles) == 1                       # the failed session never compiled; the retry's did
    merged = merge_lava_ranges([r for _, r in done.ordered()])
    assert np.array_equal(merged["spikes"], emu.spike_counts[:6].sum(1))
