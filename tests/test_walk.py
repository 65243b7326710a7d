"""The one walker over a model's body: graph_from_model's FloatGraph runs (GraphModule) as the model does,
folds BatchNorm, normalisation and DLIF gains the way deployment does, and names what it refuses."""

import numpy as np
import pytest
import torch

from neurodeploy.config import config_from_dict
from neurodeploy.graph import LIF, Affine, Conv2d, CubaLIF, Flatten, GraphError, InputGain, Recurrent
from neurodeploy.models import build_model
from neurodeploy.models.graph_module import GraphModule
from neurodeploy.neurons.modules import record_activity
from neurodeploy.models.walk import fold_gains, gain_record, graph_from_model, model_layers


def _model(arch="mlp", hidden=(6,), seed=0, **over):
    """tests/_helpers.py's small models (digits MLP/conv, CUBA SRNN on vowels), livelier and with a varying
    DLIF gain and non-trivial BatchNorm statistics."""
    data = {"dataset": "digits", "time_steps": 4}
    model = {"arch": arch, "hidden": list(hidden), "bias": True, "neuron": {"type": "dlif"}, **over}
    if arch == "srnn":
        data = {"dataset": "vowels", "encoder": "temporal", "time_steps": None}
        model["neuron"] = {"type": "cuba-lif", "current_leak": 0.75, **over.get("neuron", {})}
    cfg = config_from_dict({"data": data, "model": model})
    torch.manual_seed(seed)
    shape = (25, 12) if arch == "srnn" else (1, 8, 8)
    m = build_model(cfg, shape, 3)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                mod.weight.mul_(3.0)
            if getattr(mod, "gain", None) is not None:
                mod.gain.mul_(1 + 0.3 * torch.rand(mod.gain.shape, generator=g))
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
    return m.eval(), shape, (shape[0] if arch == "srnn" else 4)


def _encoded(model, shape, T, batch=6):
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        seq = model.encoder(model.quantize_input(x))
    return seq.expand(T, *seq.shape[1:]) if seq.shape[0] == 1 else seq


ARCHS = {
    "mlp": {}, "mlp-2": {"hidden": (6, 5)}, "conv": {"arch": "conv", "channels": [3]},
    "conv-strided": {"arch": "conv", "channels": [3, 4], "strides": [1, 2]},
    "conv-bn": {"arch": "conv", "channels": [3], "batchnorm": True},
    "srnn": {"arch": "srnn"}, "srnn-lif-linear": {"arch": "srnn", "readout": "linear", "neuron": {"type": "dlif"}},
    "mlp-linear": {"readout": "linear"}, "conv-bn-linear": {"arch": "conv", "channels": [3], "batchnorm": True,
                                                            "readout": "linear"},
    "linear-only": {"hidden": (), "readout": "linear"},
    "mlp-cuba": {"neuron": {"type": "cuba-dlif", "current_leak": 0.5}},
    "mlp-norm": {"normalize_mean": [0.3], "normalize_std": [0.2]},
    "conv-norm": {"arch": "conv", "channels": [3], "normalize_mean": [0.3], "normalize_std": [0.2]},
    "conv-nopad-norm": {"arch": "conv", "channels": [3], "kernel_size": 1, "normalize_mean": [0.3],
                        "normalize_std": [0.2]},
    "conv-bn-norm-linear": {"arch": "conv", "channels": [3], "batchnorm": True, "readout": "linear",
                            "normalize_mean": [0.3], "normalize_std": [0.2]},
    "srnn-norm": {"arch": "srnn", "normalize_mean": [0.3], "normalize_std": [0.2]},
}


@pytest.mark.parametrize("name", list(ARCHS))
def test_graph_runs_as_the_model(name):
    model, shape, T = _model(**ARCHS[name])
    seq = _encoded(model, shape, T)
    graph = graph_from_model(model, T, fold=False, input_shape=shape)
    with torch.no_grad(), record_activity(model) as recs:
        ref = model.run_encoded(seq).double()
        out, records = GraphModule(graph, dtype=torch.float64)(seq.double(), record=True)
    assert out.shape == ref.shape
    if graph.readout == "spikes":
        torch.testing.assert_close(out, ref, rtol=0, atol=0)            # the same spikes
    else:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)      # float32 model vs float64 graph
    spiking = [i for i, n in enumerate(graph.nodes) if isinstance(n, (LIF, CubaLIF))]
    assert len(spiking) == len(recs)
    for i, rec in zip(spiking, recs):                                  # every layer spikes the same
        torch.testing.assert_close(records[i]["spikes"], rec.spikes.double(), rtol=0, atol=0)
    assert not recs or sum(float(r.spikes.sum()) for r in recs) > 0
    assert graph.readout == ("mean" if model.readout == "linear" else "spikes")
    assert graph.time_steps == T and graph.dt == 1.0


@pytest.mark.parametrize("name", ["mlp", "conv-bn", "mlp-linear", "conv-bn-norm-linear"])
def test_folded_graph_runs_as_the_deployable_model(name):
    """fold=True is what deployment quantizes: the deployable model (gain fixed at its mean)."""
    from neurodeploy.evaluate.deployment import deployable_model

    model, shape, T = _model(**ARCHS[name])
    dep = deployable_model(model)
    graph = graph_from_model(model, T, input_shape=shape)
    assert not any(isinstance(n, InputGain) for n in graph.nodes)
    seq = _encoded(model, shape, T)
    with torch.no_grad():
        ref = dep.run_encoded(seq).double()
        out = GraphModule(graph, dtype=torch.float64)(seq.double())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    records = graph.metadata["folded_gains"]
    assert len(records) == len(model.spiking_layers())
    for rec, layer in zip(records, model.spiking_layers()):
        g = layer.gain.detach().double().numpy()
        assert isinstance(graph.nodes[rec["node"]], LIF)
        assert rec["mean"] == float(g.mean()) and rec["spread"] == pytest.approx(np.abs(g - g.mean()).max() / g.mean())
        assert gain_record(graph, rec["node"]) is rec


def test_graph_structure_and_provenance():
    model, shape, T = _model("srnn")
    g = graph_from_model(model, T, input_shape=shape)
    assert [type(n) for n in g.nodes[1:]] == [Affine, CubaLIF, Recurrent, Affine, CubaLIF]
    assert g.metadata["body_index"] == (None, 0, 0, 0, 1, 2)
    rnn = model.body[0]
    np.testing.assert_array_equal(g.nodes[1].weight, rnn.input_weights.weight.detach().double().numpy())
    np.testing.assert_array_equal(g.nodes[3].weight, rnn.recurrent_weights.weight.detach().double().numpy())
    assert float(g.nodes[2].current_leak) == float(1.0 - rnn.p.tau_syn_inv)
    model, shape, T = _model("conv", channels=[3])
    g = graph_from_model(model, T, fold=False, input_shape=shape)
    assert [type(n) for n in g.nodes[1:4]] == [Conv2d, InputGain, LIF] and isinstance(g.nodes[4], Flatten)
    assert g.input_shape == (1, 8, 8) and g.nodes[1].padding == (1, 1)
    np.testing.assert_array_equal(g.nodes[2].gain, model.body[1].gain.detach().double().numpy())
    body = model_layers(model)
    assert [layer.kind for layer in body.layers] == ["conv", "dense", "dense"] and body.readout is None
    assert body.layers[1].flatten_index == 2


def test_batchnorm_is_folded_with_eval_statistics():
    from neurodeploy.models.folding import fold_batchnorm

    model, shape, T = _model("conv", channels=[3], batchnorm=True)
    g = graph_from_model(model, T, fold=False, input_shape=shape)
    folded = fold_batchnorm(model).body[0].module
    np.testing.assert_array_equal(g.nodes[1].weight, folded.weight.detach().double().numpy())
    np.testing.assert_array_equal(g.nodes[1].bias, folded.bias.detach().double().numpy())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())   # the model is not changed


def test_normalisation_fold_is_exact():
    model, shape, T = _model(normalize_mean=[0.3], normalize_std=[0.2])
    g = graph_from_model(model, T, fold=False, input_shape=shape)
    lin = model.body[1]
    w, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
    np.testing.assert_allclose(g.nodes[2].weight, w / 0.2, rtol=1e-6)
    np.testing.assert_allclose(g.nodes[2].bias, b - w.sum(1) * 0.3 / 0.2, rtol=1e-5, atol=1e-6)
    # a zero-padded first conv keeps the normalisation as a 1x1 per-channel map in front (exact at the borders)
    model, shape, T = _model("conv", channels=[3], normalize_mean=[0.3], normalize_std=[0.2])
    g = graph_from_model(model, T, input_shape=shape)
    pre = g.nodes[1]
    assert isinstance(pre, Conv2d) and pre.weight.shape == (1, 1, 1, 1) and pre.groups == 1
    assert pre.weight.item() == pytest.approx(5.0) and pre.bias.item() == pytest.approx(-1.5)
    model, shape, T = _model("conv", channels=[3], kernel_size=1, normalize_mean=[0.3], normalize_std=[0.2])
    g = graph_from_model(model, T, input_shape=shape)
    assert isinstance(g.nodes[2], InputGain) is False and isinstance(g.nodes[2], LIF)   # folded: one conv


def test_fold_gains_rules():
    model, shape, T = _model()
    g = graph_from_model(model, T, fold=False, input_shape=shape)
    f = fold_gains(g)
    assert fold_gains(f) is f                                  # nothing left to fold
    p = model.body[2].gain.detach().double().numpy()
    np.testing.assert_array_equal(f.nodes[2].weight, g.nodes[2].weight * float(p.mean()))
    assert f.metadata["body_index"] == (None, 0, 1, 2, 3, 4)
    # the gain of an SRNN multiplies the recurrent weights too
    model, shape, T = _model("srnn", neuron={"type": "cuba-dlif"})
    g = graph_from_model(model, T, fold=False, input_shape=shape)
    f = fold_gains(g)
    p = float(model.body[0].gain.detach().double().numpy().mean())
    np.testing.assert_array_equal(f.nodes[3].weight, g.nodes[4].weight * p)
    # a gain after something else than a synapse
    bad = type(g)((g.nodes[0], Flatten(), InputGain(np.ones(3)), LIF(leak=1.0, threshold=1.0)), time_steps=3)
    with pytest.raises(GraphError, match=r"node 2 \(InputGain\): follows Flatten"):
        fold_gains(bad)


def test_time_steps_and_what_is_refused():
    model, shape, T = _model()
    g = graph_from_model(model, 3, fold=False, input_shape=shape)
    assert g.nodes[3].gain.shape == (3,)
    with pytest.raises(GraphError, match=r"body\[2\].*time_steps=5 but the DLIF gain p\[t\] has 4 steps"):
        graph_from_model(model, 5, input_shape=shape)
    conv, _, _ = _model("conv", channels=[3])
    with pytest.raises(GraphError, match="input_shape is required"):
        graph_from_model(conv, 4)
    assert graph_from_model(model, 4).input_shape == (64,)    # from the first Linear
    model.body.append(torch.nn.ReLU())
    with pytest.raises(GraphError, match=r"body\[5\] \(ReLU\): layer ReLU cannot be deployed"):
        graph_from_model(model, 4, input_shape=shape)
    model, _, _ = _model()
    model.body[0] = torch.nn.Flatten(start_dim=1)
    with pytest.raises(GraphError, match=r"body\[0\].*Flatten\(start_dim=2\)"):
        model_layers(model)
    model, _, _ = _model(readout="linear")
    model.readout = "spikes"
    with pytest.raises(GraphError, match="ends in synapses without neurons"):
        model_layers(model)


# --------------------------------------------------------------------------- the quantizer's numbers are unchanged

def _network_digest(net) -> str:
    """16 hex digits of sha256 over every integer the fixed-point network holds, layer by layer."""
    import hashlib

    h = hashlib.sha256()

    def put(*xs):
        for x in xs:
            h.update(np.ascontiguousarray(x, dtype=np.int64).tobytes() if isinstance(x, np.ndarray)
                     else repr(x).encode())
    put(net.readout, int(net.time_steps), tuple(net.input_shape), net.input_encoding.kind, int(net.input_encoding.bits))
    for layer in net.layers:
        n = layer.neurons
        put(type(layer).__name__, layer.weight, int(layer.weight_exp), n.bias_mant, int(n.bias_exp), int(n.du),
            int(n.dv), int(n.vth))
        rec = getattr(layer, "weight_rec", None)
        put(rec if rec is not None else "norec", int(getattr(layer, "weight_rec_exp", 0)))
        put(tuple(getattr(layer, "stride", ())), tuple(getattr(layer, "padding", ())), int(getattr(layer, "groups", 1)))
    return h.hexdigest()[:16]


def _pinned_model(arch="mlp", **over):
    data = {"dataset": "digits", "time_steps": 4}
    m = {"arch": arch, "hidden": [6], "bias": True, "neuron": {"type": "dlif"}, **over}
    if arch == "srnn":
        data = {"dataset": "vowels", "encoder": "temporal", "time_steps": None}
        m["neuron"] = {"type": "cuba-lif", "current_leak": 0.75}
    cfg = config_from_dict({"data": data, "model": m})
    torch.manual_seed(0)
    shape = (25, 12) if arch == "srnn" else (1, 8, 8)
    mod = build_model(cfg, shape, 3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for x in mod.modules():
            if getattr(x, "gain", None) is not None:
                x.gain.mul_(1 + 0.3 * torch.rand(x.gain.shape, generator=g))
            if isinstance(x, torch.nn.BatchNorm2d):
                x.running_mean.copy_(0.1 * torch.randn(x.running_mean.shape, generator=g))
                x.running_var.copy_(0.5 + torch.rand(x.running_var.shape, generator=g))
    return mod, shape, (25 if arch == "srnn" else 4)


# Recorded with the quantizer as it was before the walker (commit 3ceffdb, its own walk of model.body):
# the walker + quantize_graph must give the same integers. Regenerate only for an intended numeric change.
PINNED = {
    "mlp": ({}, False, "146486bc5f765d03"), "mlp-linear": ({"readout": "linear"}, False, "731cca75cc246248"),
    "conv": ({"arch": "conv", "channels": [3]}, False, "fe6abd8bc15c3ffa"),
    "conv-bn-linear": ({"arch": "conv", "channels": [3], "batchnorm": True, "readout": "linear"}, False,
                       "5ae0db3871750e6c"),
    "srnn": ({"arch": "srnn"}, False, "acdd5aa30b9c6c02"),
    "srnn-linear": ({"arch": "srnn", "readout": "linear"}, False, "bc1baeb856fa9de8"),
    "conv-bn-linear-deployed": ({"arch": "conv", "channels": [3], "batchnorm": True, "readout": "linear"}, True,
                                "5ae0db3871750e6c"),
    "srnn-driven-calibrated": ({"arch": "srnn"}, "driven", "921be0ad89c722db"),
    "mlp-driven-calibrated": ({}, "driven", "daa2cc7f635d80a5"),
}


@pytest.mark.parametrize("name", list(PINNED))
def test_fixed_point_network_is_bit_identical_to_the_old_walk(name):
    from neurodeploy.evaluate.deployment import deployable_model
    from neurodeploy.evaluate.inputs import encode_inputs
    from neurodeploy.quant import load_profile, quantize_model
    from neurodeploy.quant.quantizer import input_encoding_for

    over, how, digest = PINNED[name]
    model, shape, T = _pinned_model(**over)
    hw = load_profile("loihi2")
    kw = {}
    if how is True:
        model = deployable_model(model)
        x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(3))
        cal = encode_inputs(model, input_encoding_for(model, hw), T, x.numpy())
        kw = {"calibration": cal.float_sequence(0, len(cal)), "calibration_repeat": T if cal.repeated else None}
    elif how == "driven":
        with torch.no_grad():
            [m for m in model.modules() if isinstance(m, torch.nn.Linear)][0].weight.mul_(40.0)
        x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(3))
        cal = encode_inputs(model, input_encoding_for(model, hw), T, x.numpy())
        kw = {"calibration": cal.float_sequence(0, len(cal)), "calibration_repeat": T if cal.repeated else None}
    res = quantize_model(model, shape, hw, time_steps=T, cuba_bias="approximate", **kw)  # the old mapping
    assert _network_digest(res.network) == digest
