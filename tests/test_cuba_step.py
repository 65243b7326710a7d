"""One CUBA step (neurodeploy.neurons.functional.cuba_step), membrane noise included, used by the float
model's step noise: identical numbers to the update written out."""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy.neurons.functional import LIFFeedForwardState, cuba_parameters, cuba_step, spike_fn
from neurodeploy.noise.hardware import StepNoise, float_step_noise_model


def _written_out(current, state, p, noise=None):
    """Loihi's order as the copies had it: i, then v (+ noise), spike, reset v."""
    i = (1.0 - p.tau_syn_inv) * state.i + current
    v = (1.0 - p.tau_mem_inv) * state.v + i
    if noise is not None:
        v = v + noise
    z = spike_fn(v - p.v_th, p.alpha)
    return z, LIFFeedForwardState(v=(1.0 - z) * v + z * p.v_reset, i=i)


def test_cuba_step_with_and_without_v_noise():
    g = torch.Generator().manual_seed(0)
    p = cuba_parameters(0.9, 0.75, 1.0, 0.5)
    state = LIFFeedForwardState(v=torch.rand(4, 7, generator=g), i=torch.rand(4, 7, generator=g))
    for _ in range(5):
        current, noise = torch.randn(4, 7, generator=g), 0.3 * torch.randn(4, 7, generator=g)
        for nz in (None, noise):
            z, s = cuba_step(current, state, p, v_noise=nz)
            z2, s2 = _written_out(current, state, p, nz)
            assert torch.equal(z, z2) and torch.equal(s.v, s2.v) and torch.equal(s.i, s2.i)
        state = s


def test_float_membrane_noise_on_a_feed_forward_cuba_layer():
    """The float step-noise hook of a feed-forward CUBA layer is cuba_step with the step's noise in v."""
    from _helpers import small_quantized_model
    from neurodeploy.neurons.modules import record_activity

    model, res, shape = small_quantized_model("mlp", (12,), neuron={"type": "cuba-lif", "current_leak": 0.75})
    model.eval()
    x = torch.rand(3, *shape)
    noisy, hooks = float_step_noise_model(model, StepNoise("membrane-noise", 0.5, 4), res)
    hooks.set_samples(np.arange(3))
    with torch.no_grad(), record_activity(noisy) as recs:
        noisy(x)
    layer = [m for m in noisy.modules() if hasattr(m, "neuron_type")][0]
    p = layer.p
    cur = recs[0].current                                               # (T, B, n)
    noise = hooks.values[0].to(cur.dtype) * float(p.v_th)               # as the hook scales it
    state = LIFFeedForwardState(v=torch.zeros_like(cur[0]), i=torch.zeros_like(cur[0]))
    spikes = []
    for t in range(cur.shape[0]):
        z, state = _written_out(cur[t], state, p, noise[t])
        spikes.append(z)
    assert torch.equal(torch.stack(spikes), recs[0].spikes)
    assert recs[0].spikes.sum() > 0
