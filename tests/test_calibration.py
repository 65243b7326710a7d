"""Calibrated quantization: a layer driven far past its threshold gets a threshold scale that keeps
u and v inside the 24-bit state, so the fixed-point network keeps computing what the float model does."""

import numpy as np
import torch

from _helpers import small_quantized_model
from neurodeploy.backends import run_network
from neurodeploy.evaluate.inputs import chip_inputs, float_run
from neurodeploy.quant import load_profile, quantize_model
from neurodeploy.quant.quantizer import _state_cap, peak_currents


def test_state_cap_keeps_threshold_plus_peak_input_in_the_state():
    hw = load_profile("loihi2")
    for peak in (0.5, 4.0, 31.0, 200.0):
        vth = _state_cap(hw, peak)
        assert (vth << 6) * (1 + 1.25 * peak) <= 2**23 - 1 < ((vth + 1) << 6) * (1 + 1.25 * peak)


def test_calibration_rescues_a_strongly_driven_recurrent_layer():
    model, _, shape = small_quantized_model("srnn", hidden=(16,))
    with torch.no_grad():   # drive the recurrent layer to ~40 thresholds: u wraps at 16 without calibration
        model.body[0].input_weights.weight.mul_(40.0)
    hw = load_profile("loihi2")
    x = torch.rand(24, *shape, generator=torch.Generator().manual_seed(0))
    plain = quantize_model(model, shape, hw, time_steps=shape[0], cuba_bias="approximate")
    inputs = chip_inputs(model, plain.network, x)
    peak = peak_currents(model, inputs.float_sequence(0, len(inputs)))[0]
    assert peak > 16
    calibrated = quantize_model(model, shape, hw, time_steps=shape[0], cuba_bias="approximate",
                                calibration=inputs.float_sequence(0, len(inputs)))
    rep = calibrated.layers[0]
    assert rep.peak_current == peak and rep.vth <= _state_cap(hw, peak)
    assert any("calibration inputs" in note for note in rep.notes)
    assert calibrated.layers[1].vth == plain.layers[1].vth      # layers within the state are unchanged

    ref = float_run(model, inputs)["layer_spikes"][:, 0]

    def hidden_gap(q):
        got = run_network(q.network, inputs.values).spike_counts[:, 0]
        return np.abs(got - ref).mean() / max(ref.mean(), 1)

    assert hidden_gap(calibrated) < 0.1 < hidden_gap(plain)
