"""Per-step traces (issue 13): every layer's u and v after every step, from the emulator and from Lava's own
Vars (Lava's ``Monitor`` processes), identical on every layer and step for the same samples."""

from __future__ import annotations

import numpy as np
import pytest

from neurodeploy.backends import run_network
from test_backends import random_inputs, random_network


@pytest.mark.parametrize("kind,seed", [("dense", 11), ("rec", 12), ("conv", 13)])
def test_emulator_and_lava_traces_are_identical(kind, seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng, kind, max_layers=3, max_width=12, extreme=False, max_hw=7)
    x = random_inputs(rng, net, 2)
    emu = run_network(net, x, record_traces=True, record_state=True, record_spikes=True)
    lava = run_network(net, x, backend="lava", record_traces=True, record_spikes=True)
    P = net.time_steps + net.latency
    assert len(emu.layer_u) == len(lava.layer_u) == len(net.layers)
    moving = 0
    for li in range(len(net.layers)):
        assert emu.layer_u[li].shape == (len(x), P, int(np.prod(net.layers[li].out_shape)))
        np.testing.assert_array_equal(lava.layer_u[li], emu.layer_u[li], err_msg=f"layer {li} u")
        np.testing.assert_array_equal(lava.layer_v[li], emu.layer_v[li], err_msg=f"layer {li} v")
        np.testing.assert_array_equal(lava.layer_spikes[li], emu.layer_spikes[li], err_msg=f"layer {li} s")
        # the trace ends in the final state the backends already report
        np.testing.assert_array_equal(emu.layer_u[li][:, -1], emu.final_u[li])
        np.testing.assert_array_equal(emu.layer_v[li][:, -1], emu.final_v[li])
        moving += int(np.abs(np.diff(emu.layer_v[li], axis=1)).sum() > 0)
    assert moving > 0                       # the traces hold a moving state, not zeros


def test_traces_do_not_change_the_spikes():
    """Recording traces runs the general int64 step; the spikes equal the fast path's."""
    rng = np.random.default_rng(21)
    net = random_network(rng, "rec", max_layers=3, max_width=16, extreme=False, max_hw=7)
    x = random_inputs(rng, net, 5)
    plain = run_network(net, x, record_spikes=True)
    traced = run_network(net, x, record_spikes=True, record_traces=True)
    np.testing.assert_array_equal(plain.output_spikes, traced.output_spikes)
    for a, b in zip(plain.layer_spikes, traced.layer_spikes):
        np.testing.assert_array_equal(a, b)
    assert plain.layer_u is None and traced.layer_u is not None


def test_traces_of_chosen_layers_only():
    """``record_traces=[-1]`` traces the output layer alone, on both backends, with the same numbers."""
    rng = np.random.default_rng(31)
    net = random_network(rng, "dense", max_layers=3, max_width=10, extreme=False, max_hw=7)
    while len(net.layers) < 2:
        net = random_network(rng, "dense", max_layers=3, max_width=10, extreme=False, max_hw=7)
    x = random_inputs(rng, net, 2)
    full = run_network(net, x, record_traces=True)
    emu = run_network(net, x, record_traces=[-1])
    lava = run_network(net, x, record_traces=[-1], backend="lava")
    for res in (emu, lava):
        assert all(a is None for a in res.layer_u[:-1]) and res.layer_v[-1] is not None
        np.testing.assert_array_equal(res.layer_v[-1], full.layer_v[-1])
        np.testing.assert_array_equal(res.layer_u[-1], full.layer_u[-1])
    with pytest.raises(Exception, match="record_traces layer 7 is out of range"):
        run_network(net, x, record_traces=[7])
