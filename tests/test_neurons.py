"""Neuron dynamics against hand-computed sequences."""

import pytest
import torch
from norse.torch.functional.lif import LIFFeedForwardState as NorseLIFState
from norse.torch.functional.lif import LIFParameters as NorseLIFParameters
from norse.torch.functional.lif import lif_feed_forward_step

from neurodeploy.config import NeuronConfig
from neurodeploy.neurons import RecurrentSpikingNeurons, SpikingNeurons, record_activity, spike_fn


def _layer(kind, leak=0.5, threshold=1.0, current_leak=0.5, steps=4):
    return SpikingNeurons(NeuronConfig(type=kind, leak=leak, threshold=threshold, current_leak=current_leak), steps)


def _run(layer, currents):
    x = torch.tensor(currents, dtype=torch.float32).view(-1, 1, 1)
    spikes, state = layer(x)
    return spikes.view(-1).tolist(), state


def test_lif_hand_computed_sequence():
    # lambda=0.5: v = 0.6, 0.9, 1.05 (spike, reset to 0), 2.0 (spike)
    spikes, state = _run(_layer("lif"), [0.6, 0.6, 0.6, 2.0])
    assert spikes == [0.0, 0.0, 1.0, 1.0]
    assert state.v.item() == 0.0


def test_lif_threshold_is_strict_and_leak_multiplicative():
    # v = 0.5, then 0.25 + 0.75 = 1.0 exactly: no spike (Loihi's v > vth)
    spikes, state = _run(_layer("lif", steps=2), [0.5, 0.75])
    assert spikes == [0.0, 0.0]
    assert state.v.item() == pytest.approx(1.0)


def test_dlif_gain_scales_input_per_step():
    layer = _layer("dlif")
    assert layer.gain is not None and layer.gain.shape == (4,)
    with torch.no_grad():
        layer.gain.copy_(torch.tensor([2.0, 1.0, 1.0, 0.5]))
    # v = 1.2 (spike, 0), 0.6, 0.3+0.6 = 0.9, 0.45+1.0 = 1.45 (spike)
    spikes, _ = _run(layer, [0.6, 0.6, 0.6, 2.0])
    assert spikes == [1.0, 0.0, 0.0, 1.0]


def test_dlif_gain_is_learnable_and_lif_has_none():
    layer = _layer("dlif")
    x = torch.full((4, 3, 5), 0.7)
    spikes, _ = layer(x)
    spikes.sum().backward()
    assert layer.gain.grad is not None and layer.gain.grad.abs().sum() > 0
    assert _layer("lif").gain is None


def test_cuba_updates_current_first_like_loihi():
    # i = 1.2, v = 1.2 -> spike at step 1 (no lag); then i = 0.6, 0.3, 0.15 (i not reset)
    layer = _layer("cuba-lif")
    x = torch.tensor([1.2, 0.0, 0.0, 0.0]).view(-1, 1, 1)
    spikes, state = layer(x)
    assert spikes.view(-1).tolist() == [1.0, 0.0, 0.0, 0.0]
    # v: 0 (reset), 0.6, 0.3 + 0.3 = 0.6, 0.3 + 0.15 = 0.45
    assert state.v.item() == pytest.approx(0.45)
    assert state.i.item() == pytest.approx(0.15)
    # Norse's own LIF step lags by one step: with the same decays it has not spiked yet at step 1
    p = NorseLIFParameters(tau_syn_inv=torch.tensor(0.5), tau_mem_inv=torch.tensor(0.5), v_th=torch.tensor(1.0),
                           v_leak=torch.tensor(0.0), v_reset=torch.tensor(0.0), method="heaviside")
    z, _ = lif_feed_forward_step(torch.tensor([1.2]), NorseLIFState(v=torch.zeros(1), i=torch.zeros(1)), p, dt=1.0)
    assert z.item() == 0.0


def test_triangle_surrogate_gradient():
    for gamma, u, expected in [(1.0, 0.5, 0.5), (2.0, 0.5, 0.375), (1.0, 1.5, 0.0), (1.0, -0.25, 0.75)]:
        x = torch.tensor([u], requires_grad=True)
        out = spike_fn(x, gamma)
        out.backward()
        assert out.item() == float(u > 0)
        assert x.grad.item() == pytest.approx(expected)


def test_recurrent_layer_hand_computed():
    layer = RecurrentSpikingNeurons(1, 1, NeuronConfig(type="lif", leak=0.5), 3, bias=False)
    with torch.no_grad():
        layer.input_weights.weight.fill_(1.0)
        layer.recurrent_weights.weight.fill_(-1.0)
    x = torch.full((3, 1, 1), 1.5)
    with record_activity(layer) as recs:
        spikes, _ = layer(x)
    # I = 1.5 (spike), 1.5 - 1 = 0.5, 1.5 + 0 -> v = 0.25 + 1.5 = 1.75 (spike)
    assert spikes.view(-1).tolist() == [1.0, 0.0, 1.0]
    assert recs[0].current.view(-1).tolist() == [1.5, 0.5, 1.5]
    assert recs[0].input_current.view(-1).tolist() == [1.5, 1.5, 1.5]


def test_gain_rejects_longer_input():
    with pytest.raises(ValueError, match="time steps"):
        _layer("dlif", steps=2)(torch.zeros(3, 1, 1))
