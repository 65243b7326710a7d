"""Quantizer ranges on edge cases, profiles, resources."""

import numpy as np
import pytest
import torch

from neurodeploy.config import config_from_dict
from neurodeploy.models import build_model
from neurodeploy.quant import ProfileError, QuantizationError, load_profile, quantize_model
from neurodeploy.quant.profile import profile_from_dict
from neurodeploy.quant.report import report_dict, report_markdown

LOIHI2 = load_profile("loihi2")


def _model(kind="dlif", hidden=(6,), readout="spikes", arch="mlp", **model_over):
    cfg = config_from_dict({
        "data": {"dataset": "digits", "time_steps": 4},
        "model": {"arch": arch, "hidden": list(hidden), "readout": readout, "neuron": {"type": kind},
                  **model_over},
    })
    torch.manual_seed(0)
    return build_model(cfg, (1, 8, 8), 3)


def _set(model, layer_index, weight):
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        linears[layer_index].weight.copy_(torch.as_tensor(weight, dtype=torch.float32))


def _check_ranges(net, profile=LOIHI2):
    for layer in net.layers:
        w = layer.weight
        assert w.min() >= -256 and w.max() <= 254
        assert np.all(w % 2 == 0), "mixed-sign 8-bit Dense keeps only even mantissas"
        assert profile.weights.exp_min <= layer.weight_exp <= profile.weights.exp_max
        n = layer.neurons
        assert 0 <= n.vth <= profile.vth_max
        assert 0 <= n.du <= 4095 and 0 <= n.dv <= 4095
        assert np.all(np.abs(n.bias_mant) <= profile.bias_mant_max)
        assert 0 <= n.bias_exp <= profile.bias_exp_max


def test_regular_model_uses_full_weight_range():
    model = _model()
    res = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4)
    _check_ranges(res.network)
    for layer in res.network.layers:
        assert np.abs(layer.weight).max() >= 250  # fills the 8-bit range
    assert res.layers[0].weight_rel_error < 0.02
    # DLIF/LIF neurons have no current state: du = 4095 makes u exactly this step's input
    assert res.network.layers[0].neurons.du == 4095
    assert res.network.layers[0].neurons.dv == round(4096 * 0.01)


def test_all_zero_layer():
    model = _model()
    _set(model, 0, np.zeros((6, 64)))
    res = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4)
    _check_ranges(res.network)
    assert np.all(res.network.layers[0].weight == 0)
    assert res.network.layers[0].neurons.vth > 0
    assert "all weights are zero" in res.layers[0].notes


def test_huge_weights_keep_threshold_resolution_and_clip():
    model = _model()
    w = np.full((6, 64), 0.01)
    w[0, 0] = 1e7  # one absurd outlier
    _set(model, 0, w)
    res = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4)
    _check_ranges(res.network)
    assert res.network.layers[0].neurons.vth >= 64
    assert res.layers[0].weight_clip_fraction > 0
    assert any("huge" in note for note in res.layers[0].notes)


def test_negative_only_weights():
    model = _model()
    _set(model, 1, -np.abs(np.random.default_rng(0).normal(size=(3, 6))))
    res = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4)
    _check_ranges(res.network)
    w = res.network.layers[1].weight
    assert w.max() <= 0 and w.min() == -256  # the negative end of mixed mode is -256


def test_threshold_near_17_bit_limit():
    model = _model()
    _set(model, 0, np.full((6, 64), 1e-9))  # tiny weights: the threshold hits its cap
    res = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4, vth_target=LOIHI2.vth_max)
    _check_ranges(res.network)
    assert res.network.layers[0].neurons.vth == LOIHI2.vth_max == 2**17 - 1


def test_gain_folded_and_reported():
    model = _model()
    layer = model.spiking_layers()[0]
    with torch.no_grad():
        layer.gain.copy_(torch.tensor([2.0, 2.0, 2.0, 2.0]))
    plain = quantize_model(_model(), (1, 8, 8), LOIHI2, time_steps=4)
    res = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4)
    assert res.layers[0].gain_mean == pytest.approx(2.0)
    assert res.layers[0].gain_spread == pytest.approx(0.0)
    # doubling every weight's gain halves the threshold relative to the weights

    def th_over_w(r):
        layer = r.network.layers[0]
        return layer.neurons.vth / (np.abs(layer.weight).max() * 2.0**layer.weight_exp)

    assert th_over_w(res) == pytest.approx(th_over_w(plain) / 2, rel=0.01)


def test_cuba_decays_and_recurrent_layer():
    cfg = config_from_dict({
        "data": {"dataset": "vowels", "encoder": "temporal", "time_steps": None},
        "model": {"arch": "srnn", "hidden": [5], "neuron": {"type": "cuba-lif", "current_leak": 0.75}},
    })
    model = build_model(cfg, (25, 12), 9)
    res = quantize_model(model, (25, 12), LOIHI2, time_steps=25)
    _check_ranges(res.network)
    first = res.network.layers[0]
    assert first.weight_rec is not None and first.weight_rec.shape == (5, 5)
    assert first.neurons.du == round(4096 * 0.25) - 1  # Lava adds the hidden +1
    assert res.network.input_shape == (12,)


def test_linear_readout_becomes_an_integrator_output():
    # details (bound, bias, backends, netx) in test_readout.py
    res = quantize_model(_model(readout="linear"), (1, 8, 8), LOIHI2, time_steps=4)
    _check_ranges(res.network)
    out = res.network.layers[-1].neurons
    assert res.network.readout == "potential" and (out.du, out.dv, out.vth) == (4095, 0, LOIHI2.vth_max)


def test_input_bits_must_match_profile():
    with pytest.raises(QuantizationError, match="input_bits"):
        quantize_model(_model(input_bits=4), (1, 8, 8), LOIHI2, time_steps=4)


def test_network_too_big_for_profile_names_numbers():
    data = {"name": "tiny", "weights": vars(LOIHI2.weights), "neuron": vars(LOIHI2.neuron),
            "input": vars(LOIHI2.input),
            "resources": {"neurons_per_core": 2, "synapses_per_core": 1000, "cores_per_chip": 2, "max_fan_in": 4096}}
    tiny = profile_from_dict(data, "tiny.yaml")
    with pytest.raises(QuantizationError) as err:
        quantize_model(_model(), (1, 8, 8), tiny, time_steps=4)
    assert "needs 5 cores > 2 cores per chip" in str(err.value)


def test_report_has_every_layer():
    res = quantize_model(_model(hidden=(6, 5)), (1, 8, 8), LOIHI2, time_steps=4)
    d = report_dict(res)
    assert [r["index"] for r in d["layers"]] == [0, 1, 2]
    assert "| layer |" in report_markdown(res)


def test_bundled_profiles_load():
    assert load_profile("loihi1").resources.neurons_per_core == 1024
    assert LOIHI2.weight_max == 254 and LOIHI2.vth_max == 131071


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["weights"].update(bitz=8), "weights.bitz"),
    (lambda d: d["neuron"].pop("vth_bits"), "neuron.vth_bits"),
    (lambda d: d.update(colour="blue"), "colour"),
    (lambda d: d["weights"].update(bits="eight"), "weights.bits"),
    (lambda d: d["weights"].update(sign_mode="both"), "sign_mode"),
    (lambda d: d.pop("resources"), "resources"),
])
def test_bad_profile_names_key(mutate, needle):
    data = {"name": "x", "weights": dict(vars(LOIHI2.weights)), "neuron": dict(vars(LOIHI2.neuron)),
            "input": dict(vars(LOIHI2.input)), "resources": dict(vars(LOIHI2.resources))}
    mutate(data)
    with pytest.raises(ProfileError) as err:
        profile_from_dict(data, "bad.yaml")
    assert needle in str(err.value) and "bad.yaml" in str(err.value)


def test_unknown_profile_lists_bundled():
    with pytest.raises(ProfileError, match="loihi2"):
        load_profile("loihi9")


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_spike_input_networks_are_exact_in_netx(tmp_path, arch):
    from neurodeploy.io import read_netx, write_netx

    cfg = config_from_dict({
        "data": {"dataset": "digits", "encoder": "poisson", "time_steps": 4},
        "model": {"arch": arch, "hidden": [6], "bias": True, "channels": [3] if arch == "conv" else [],
                  "strides": [2] if arch == "conv" else [], "neuron": {"type": "dlif"}},
    })
    res = quantize_model(build_model(cfg, (1, 8, 8), 3), (1, 8, 8), LOIHI2, time_steps=4)
    assert res.network.input_encoding.kind == "spikes"
    assert all(layer.weight_exp == 0 for layer in res.network.layers)
    write_netx(res.network, tmp_path / "n.net")  # strict: raises if netx cannot hold it exactly
    back = read_netx(tmp_path / "n.net")
    for a, b in zip(res.network.layers, back.layers):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.neurons.bias_mant, b.neurons.bias_mant)


def test_graded_input_layer_is_the_only_inexact_one(tmp_path):
    import warnings

    from neurodeploy.io import NetxInexactWarning, read_netx, write_netx

    res = quantize_model(_model(hidden=(6, 5), bias=True), (1, 8, 8), LOIHI2, time_steps=4)
    # 8-bit graded pixels need fractional weights in the first layer; spikes after it do not
    assert res.network.layers[0].weight_exp < 0
    assert all(layer.weight_exp == 0 for layer in res.network.layers[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_netx(res.network, tmp_path / "n.net", exact=False)
    inexact = [w for w in caught if issubclass(w.category, NetxInexactWarning)]
    assert len(inexact) == 1 and "layer 0" in str(inexact[0].message).lower()
    back = read_netx(tmp_path / "n.net")  # our reader restores the exact IR
    assert np.array_equal(back.layers[0].weight, res.network.layers[0].weight)
    assert back.layers[0].weight_exp == res.network.layers[0].weight_exp


def test_shipped_conv_model_quantizes():
    from neurodeploy.config import load_config
    from neurodeploy.data import load_dataset

    cfg = load_config("models/mnist5k-conv-dlif.yaml")
    data = load_dataset("mnist5k")
    model = build_model(cfg, data.input_shape, data.n_classes)
    res = quantize_model(model, data.input_shape, LOIHI2, time_steps=8)
    _check_ranges(res.network)
    assert [type(layer).__name__ for layer in res.network.layers] == ["ConvLayer"] * 3 + ["DenseLayer"] * 2
    assert res.network.layers[0].neurons.bias_mant.shape == (8 * 28 * 28,)


def test_recurrent_layer_with_graded_input_keeps_input_weight_resolution():
    cfg = config_from_dict({
        "data": {"dataset": "vowels", "encoder": "temporal", "time_steps": None},
        "model": {"arch": "srnn", "hidden": [16], "neuron": {"type": "dlif"}},
    })
    torch.manual_seed(0)
    model = build_model(cfg, (25, 12), 9)
    res = quantize_model(model, (25, 12), LOIHI2, time_steps=25)
    rep = res.layers[0]
    assert rep.weight_rel_error < 0.02 and rep.recurrent_rel_error < 0.02
    assert rep.weight_levels_used > 50
