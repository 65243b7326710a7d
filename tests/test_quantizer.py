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


# --------------------------------------------------------------------------- quantize_graph: any FloatGraph

from neurodeploy.graph import (LI, LIF, Affine, AvgPool2d, Conv2d, CubaLIF, Flatten, FloatGraph, Input,  # noqa: E402
                               Recurrent, SumPool2d)
from neurodeploy.quant import quantize_graph  # noqa: E402
from neurodeploy.quant.layers import graph_layers  # noqa: E402


def _rng(seed=0):
    return np.random.default_rng(seed)


def _chain_graph(shape, chain, out_neurons):
    return FloatGraph((Input(shape), *chain, LIF(leak=0.9, threshold=1.0)), time_steps=4)


def _chain_current(graph, x):
    """The current the graph's neuron node receives for input x (GraphModule, float64)."""
    from neurodeploy.models.graph_module import GraphModule

    _, rec = GraphModule(graph, dtype=torch.float64)(torch.as_tensor(x)[None], currents=True)
    return rec[len(graph.nodes) - 1]["current"][0].numpy()


def _layer_current(layer, x):
    import torch.nn.functional as F
    if layer.kind == "conv":
        y = F.conv2d(torch.as_tensor(x), torch.as_tensor(np.array(layer.weight)),
                     None if layer.bias is None else torch.as_tensor(np.array(layer.bias)),
                     stride=layer.conv.stride, padding=layer.conv.padding, dilation=layer.conv.dilation,
                     groups=layer.conv.groups).numpy()
    else:
        y = x.reshape(x.shape[0], -1) @ layer.weight.T + (0 if layer.bias is None else layer.bias)
    y = y.reshape(x.shape[0], -1)
    if layer.neuron_bias is not None:
        y = y + layer.neuron_bias
    return y


CHAINS = {
    # the NIR paper's Sinabs CNN: a 2x2 sum pool into a padded 3x3 conv is one 6x6 conv of stride 2, padding 2
    "sumpool-conv": ((4, 8, 8), lambda r: [SumPool2d((2, 2), (2, 2)),
                                          Conv2d(r.standard_normal((3, 4, 3, 3)), r.standard_normal(3),
                                                 padding=(1, 1))], "conv"),
    "avgpool-flatten-affine": ((2, 6, 6), lambda r: [AvgPool2d((2, 2), (2, 2)), Flatten(),
                                                     Affine(r.standard_normal((5, 18)), r.standard_normal(5))],
                               "dense"),
    # the walker's normalisation before a padded conv: a bias per neuron (borders differ)
    "depthwise-conv": ((2, 5, 5), lambda r: [Conv2d(r.uniform(1, 3, (2, 1, 1, 1)), r.standard_normal(2), groups=2),
                                            Conv2d(r.standard_normal((3, 2, 3, 3)), r.standard_normal(3),
                                                   padding=(1, 1), stride=(2, 2))], "conv"),
    "affine-affine": ((6,), lambda r: [Affine(r.standard_normal((4, 6)), r.standard_normal(4)),
                                       Affine(r.standard_normal((3, 4)), r.standard_normal(3))], "dense"),
    "sumpool-dilated-conv": ((2, 12, 12), lambda r: [SumPool2d((2, 2), (2, 2)),
                                                     Conv2d(r.standard_normal((2, 2, 2, 2)), dilation=(2, 2))],
                             "conv"),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_linear_chains_compose_exactly(name):
    shape, make, kind = CHAINS[name]
    graph = _chain_graph(shape, make(_rng()), None)
    layers, readout = graph_layers(graph, QuantizationError)
    assert readout is None and len(layers) == 1 and layers[0].kind == kind
    x = _rng(1).standard_normal((3, *shape))
    np.testing.assert_allclose(_layer_current(layers[0], x), _chain_current(graph, x).reshape(3, -1),
                               rtol=1e-10, atol=1e-10)
    res = quantize_graph(graph, LOIHI2)
    assert len(res.network.layers) == 1 and res.layers[0].node == len(graph.nodes) - 1


@pytest.mark.parametrize("chain, shape, match", [
    ([SumPool2d((2, 2), (2, 2))], (1, 4, 4), r"node 1 \(SumPool2d\): pooling must be followed by an Affine or Conv2d"),
    ([Conv2d(np.ones((1, 1, 3, 3)), padding=(1, 1)), SumPool2d((2, 2), (2, 2))], (1, 4, 4),
     r"node 2 \(SumPool2d\): pooling after the last synapse"),
    ([SumPool2d((3, 3), (2, 2)), Conv2d(np.ones((1, 1, 3, 3)), padding=(1, 1))], (1, 9, 9),
     r"node 1 \(SumPool2d\) folded into the Conv2d after it: .*not exact"),
    ([Conv2d(np.ones((2, 1, 3, 3))), Conv2d(np.ones((1, 2, 1, 1)))], (1, 6, 6),
     r"node 1 \(Conv2d\): feeds a Conv2d without neurons between them"),
])
def test_pooling_that_cannot_fold_is_refused(chain, shape, match):
    with pytest.raises(QuantizationError, match=match):
        quantize_graph(_chain_graph(shape, chain, None), LOIHI2)


def _dense(n_in=4, n=3, seed=0):
    return Affine(_rng(seed).standard_normal((n, n_in)), _rng(seed + 1).standard_normal(n))


@pytest.mark.parametrize("nodes, readout, match", [
    ([_dense(), LIF(leak=0.9, threshold=1.0, reset="subtract")], "spikes",
     r"node 2 \(LIF\): reset 'subtract'"),
    ([_dense(), LIF(leak=np.array([0.9, 0.8, 0.9]), threshold=1.0)], "spikes",
     r"node 2 \(LIF\): leak has 2 different values"),
    ([_dense(), CubaLIF(current_leak=np.array([0.5, 0.6, 0.5]), leak=0.9, threshold=1.0)], "spikes",
     r"node 2 \(CubaLIF\): current_leak has 2 different values"),
    ([_dense(), LIF(leak=0.9, threshold=1.0), _dense(3, 2), LI(leak=0.9)], "potential",
     r"node 4 \(LI\): leak 0.9: the integrator readout sums"),
    ([_dense(), LIF(leak=0.9, threshold=1.0), _dense(3, 2), LI(leak=1.0)], "mean",
     r"node 4 \(LI\): an LI output is read as its potential"),
    ([_dense(), LIF(leak=0.9, threshold=1.0)], "potential", r"readout 'potential' needs a last LI node"),
    ([_dense(), LIF(leak=0.9, threshold=1.0), _dense(3, 2)], "spikes", "ends in synapses without neurons"),
    ([_dense(), LI(leak=1.0), _dense(3, 2), LIF(leak=0.9, threshold=1.0)], "spikes",
     r"node 2 \(LI\): a non-spiking integrator can only be the graph's last node"),
    ([_dense(), LIF(leak=1.5, threshold=1.0)], "spikes", r"node 2 \(LIF\): leak 1.5 outside \[0, 1\]"),
    ([_dense(), LIF(leak=0.9, threshold=-1.0)], "spikes", r"node 2 \(LIF\): threshold -1: .* positive"),
    ([Affine(np.full((3, 4), np.nan)), LIF(leak=0.9, threshold=1.0)], "spikes",
     r"node 1 \(Affine\): weight has 12 of 12 values NaN"),
])
def test_what_loihi_cannot_do_is_refused_naming_the_node(nodes, readout, match):
    graph = FloatGraph((Input((4,)), *nodes), time_steps=4, readout=readout)
    with pytest.raises(QuantizationError, match=match) as err:
        quantize_graph(graph, LOIHI2)
    assert "\n" not in str(err.value)


def test_conv_recurrence_and_missing_steps_are_refused():
    conv = FloatGraph((Input((1, 4, 4)), Conv2d(np.ones((1, 1, 3, 3)), padding=(1, 1)),
                       LIF(leak=0.9, threshold=1.0), Recurrent(np.eye(16))), time_steps=3)
    with pytest.raises(QuantizationError, match=r"node 3 \(Recurrent\): recurrent weights on a conv layer"):
        quantize_graph(conv, LOIHI2)
    plain = FloatGraph((Input((4,)), _dense(), LIF(leak=0.9, threshold=1.0)))
    with pytest.raises(QuantizationError, match="time_steps None"):
        quantize_graph(plain, LOIHI2)
    assert quantize_graph(plain, LOIHI2, time_steps=5).network.time_steps == 5


def test_if_neurons_per_neuron_thresholds_and_an_li_readout():
    """IF (leak 1) is dv 0; per-neuron thresholds are normalised into the rows (exact); a last LI with leak 1
    is the integrator readout and its bias is a bias like the synapse's."""
    from neurodeploy.backends import run_network
    from neurodeploy.models.graph_module import GraphModule

    r = _rng(3)
    w1 = r.uniform(0, 1, (5, 4))
    theta = np.array([0.5, 1.0, 1.5, 1.0, 2.0])
    graph = FloatGraph((Input((4,)), Affine(w1), LIF(leak=1.0, threshold=theta),
                        Affine(r.standard_normal((3, 5))), LI(leak=1.0, bias=np.array([0.05, -0.05, 0.0]))),
                       time_steps=8, readout="potential")
    res = quantize_graph(graph, LOIHI2)
    net = res.network
    assert net.readout == "potential" and net.layers[0].neurons.dv == 0 and res.layers[1].node == 4
    assert any("per-neuron thresholds" in n for n in res.layers[0].notes)
    # row i scaled by 2 / theta_i: the integer weights' rows are in that ratio to the float rows
    w_int = net.layers[0].weight.astype(float)
    ratio = w_int / (w1 * (2.0 / theta)[:, None])
    assert np.allclose(ratio.mean(1), ratio.mean(), rtol=0.03)
    x = (r.uniform(size=(40, 8, 4)) < 0.4).astype(np.int64)
    fixed = run_network(net, x).spike_counts[:, 0]          # layer 0's spikes per sample
    with torch.no_grad():
        _, rec = GraphModule(graph, dtype=torch.float64)(torch.as_tensor(np.moveaxis(x, 1, 0), dtype=torch.float64),
                                                         record=True)
    ref = rec[2]["spikes"].sum((0, 2)).numpy()
    assert ref.sum() > 0 and np.abs(fixed - ref).sum() <= 0.05 * ref.sum()


def test_graph_calibration_gives_the_model_path_peaks():
    """quantize_graph(calibration=) measures the peaks on the graph (GraphModule), quantize_model on the
    model; for a model without gains they agree and so do the networks."""
    from neurodeploy.evaluate.inputs import encode_inputs
    from neurodeploy.models.walk import graph_from_model
    from neurodeploy.quant.quantizer import input_encoding_for

    model = _model(kind="lif", hidden=(8,))
    with torch.no_grad():
        model.body[1].weight.mul_(60.0)      # drive the first layer far past its threshold
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cal = encode_inputs(model, input_encoding_for(model, LOIHI2), 4, x.numpy())
    seq = cal.float_sequence(0, len(cal))
    a = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4, calibration=seq, calibration_repeat=4)
    b = quantize_graph(graph_from_model(model, 4, input_shape=(1, 8, 8)), LOIHI2, input_encoding="graded",
                       calibration=seq, calibration_repeat=4)
    assert a.layers[0].peak_current > 4
    for ra, rb in zip(a.layers, b.layers):
        assert rb.peak_current == pytest.approx(ra.peak_current, rel=1e-5) and rb.vth == ra.vth
    for la, lb in zip(a.network.layers, b.network.layers):
        np.testing.assert_array_equal(la.weight, lb.weight)


@pytest.mark.parametrize("arch, over", [
    ("mlp", {}), ("conv", {"channels": [3]}),            # the conv is zero-padded: a bias per neuron
])
def test_models_with_input_normalisation_deploy(arch, over):
    """The normalisation folds into the first layer's weights and bias; the fixed-point first layer spikes as
    the float graph does when run with the chip's timing (the bias acts from step 0, the input arrives one
    step later through the synapse, and the bias goes on for the run's last steps)."""
    from neurodeploy.backends import run_network
    from neurodeploy.evaluate.inputs import chip_inputs
    from neurodeploy.models.graph_module import GraphModule
    from neurodeploy.models.walk import graph_from_model

    model = _model(arch=arch, normalize_mean=[0.4], normalize_std=[0.25], **over).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(2.0)
    res = quantize_model(model, (1, 8, 8), LOIHI2, time_steps=4)
    rep = res.layers[0]
    assert rep.bias_clip_fraction == 0 and any("does not fit" in n for n in rep.notes)   # scale capped for the bias
    assert any("input normalisation" in n for n in rep.notes)
    bias = res.network.layers[0].neurons.bias_mant
    if arch == "conv":    # the border neurons see fewer normalised zeros than the interior
        per_channel = bias.reshape(3, -1)
        assert not np.all(per_channel == per_channel[:, :1])
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    inputs = chip_inputs(model, res.network, x)
    fixed = run_network(res.network, inputs.values)
    graph = graph_from_model(model, 4, input_shape=(1, 8, 8))
    P = fixed.total_steps
    seq = np.moveaxis(np.asarray(inputs.values, dtype=np.float64), 1, 0) / inputs.scale
    chip_timed = np.zeros((P, *seq.shape[1:]))
    chip_timed[1:1 + len(seq)] = seq
    with torch.no_grad():
        _, rec = GraphModule(FloatGraph(graph.nodes, time_steps=P), dtype=torch.float64)(
            torch.as_tensor(chip_timed), record=True)
    first = next(i for i, n in enumerate(graph.nodes) if isinstance(n, LIF))
    ref = rec[first]["spikes"].flatten(2).sum((0, 2)).numpy()
    assert ref.sum() > 0 and np.abs(fixed.spike_counts[:, 0] - ref).sum() <= 0.02 * ref.sum()
