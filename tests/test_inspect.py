"""`inspect`: float vs fixed point, layer by layer and step by step."""

import json

import numpy as np
import pytest
import torch

from neurodeploy.cli import main
from neurodeploy.evaluate.inspect import compare_layers, inspect_deployment


def test_compare_layers_counts_and_first_step():
    f = np.zeros((2, 4, 3), np.uint8)
    q = np.zeros((2, 4, 3), np.uint8)
    f[:, :, 0] = 1                     # neuron 0 saturated in float
    q[:, :, 0] = 1
    f[0, 2, 1] = 1                     # neuron 1 differs at step 2 of sample 0
    (c,) = compare_layers([f], [q], [7])
    assert c.first_step == 2 and c.most_divergent == [1] and c.node == 7
    assert c.count_agreement == pytest.approx(5 / 6) and c.spike_agreement == pytest.approx(23 / 24)
    assert c.float_saturated == c.fixed_saturated == pytest.approx(1 / 3)
    assert c.fixed_silent == pytest.approx(2 / 3) and c.float_silent == pytest.approx(1 / 3)
    (same,) = compare_layers([f], [f], [7])
    assert same.first_step is None and same.most_divergent == []


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    from neurodeploy.config import load_config
    from neurodeploy.data import load_dataset
    from neurodeploy.evaluate.deployment import prepare_deployment
    from neurodeploy.train import train

    run = tmp_path_factory.mktemp("inspect") / "run"
    cfg = load_config("models/mnist5k-mlp-dlif.yaml", {"training.epochs": 1, "threads": 1, "model.hidden": [32]})
    data = load_dataset(cfg.data.dataset, seed=0)
    train(cfg, run, progress=False, data=data.subset(400, 100), log=lambda s: None)
    dep = prepare_deployment(run, "loihi2", 0, progress=False, log=lambda s: None)
    return run, dep, torch.as_tensor(data.x_test[:40]), data.y_test[:40]


def test_a_broken_neuron_is_named(deployed):
    from neurodeploy.evaluate.inputs import encoding_generator

    _, dep, x, y = deployed
    inputs = dep.inputs(x, encoding_generator(0))
    clean = inspect_deployment(dep, inputs, y)
    assert clean["layers"][0]["spike_agreement"] > 0.95          # aligned: float and fixed nearly agree
    # silence the float model's busiest hidden neuron on the chip: inspect must point at it
    busiest = int(clean["traces"]["float"][0].sum((0, 1)).argmax())
    layer = dep.network.layers[0]
    layer.weight = layer.weight.copy()
    layer.weight[busiest] = 0                  # no input reaches it (and these hidden layers have no bias)
    broken = inspect_deployment(dep, inputs, y)
    first = broken["first_divergence"]
    assert first["layer"] == 0 and first["neurons"][0] == busiest
    assert broken["traces"]["fixed"][0][:, :, busiest].sum() == 0
    assert broken["layers"][0]["fixed_silent"] > clean["layers"][0]["fixed_silent"]


def test_inspect_command_writes_json_markdown_and_png(deployed, tmp_path, capsys):
    run = deployed[0]
    assert main(["inspect", str(run), "--samples", "20", "--report", str(tmp_path / "r"), "--quiet"]) == 0
    data = json.loads((tmp_path / "r" / "inspect.json").read_text())
    assert data["samples"] == 20 and len(data["layers"]) == 2 and "first_divergence" in data
    assert (tmp_path / "r" / "inspect.png").stat().st_size > 1000
    assert "First divergence" in (tmp_path / "r" / "inspect.md").read_text() or data["first_divergence"] is None
    assert main(["inspect", str(tmp_path / "nope")]) == 2


def test_inspect_a_modified_file_against_the_run(deployed, tmp_path, capsys):
    import copy

    from neurodeploy.evaluate.deployment import load_deployment
    from neurodeploy.io import write_netx

    run = deployed[0]
    net = copy.deepcopy(load_deployment(run, "loihi2", log=lambda m: None).network)
    out = net.layers[1]
    out.weight = out.weight.copy()
    out.weight[3] = 0                          # output neuron 3 gets no input in the file
    write_netx(net, tmp_path / "broken.net", exact=False)
    assert main(["inspect", str(run), "--network", str(tmp_path / "broken.net"), "--samples", "20",
                 "--report", str(tmp_path / "r"), "--quiet"]) == 0
    first = json.loads((tmp_path / "r" / "inspect.json").read_text())["first_divergence"]
    layer0 = json.loads((tmp_path / "r" / "inspect.json").read_text())["layers"][0]
    # layer 0 is untouched: where it already differs from float the first divergence is there; else layer 1
    assert first["layer"] == (0 if layer0["first_step"] is not None else 1)
    assert 3 in json.loads((tmp_path / "r" / "inspect.json").read_text())["layers"][1]["most_divergent"][:1]
    # another architecture is a one-line error
    small = copy.deepcopy(net)
    small.layers = small.layers[:1]
    write_netx(small, tmp_path / "other.net", exact=False)
    capsys.readouterr()
    assert main(["inspect", str(run), "--network", str(tmp_path / "other.net"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "other.net" in err and "same architecture" in err and len(err.strip().splitlines()) == 1


def test_emulator_and_lava_traces_are_identical(deployed, tmp_path):
    from neurodeploy.evaluate.deployment import load_deployment
    from neurodeploy.evaluate.inputs import encoding_generator

    run, _, x, y = deployed
    dep = load_deployment(run, "loihi2", log=lambda m: None)       # unbroken (the fixture's copy was edited)
    result = inspect_deployment(dep, dep.inputs(x[:12], encoding_generator(0)), y[:12], lava_samples=4)
    lava = result["emulator_vs_lava"]
    assert lava["samples"] == 4 and lava["first_divergence"] is None
    assert all(c["spike_agreement"] == 1.0 for c in lava["layers"])
    assert sum(c["fixed_spikes_per_sample"] for c in lava["layers"]) > 0
    # the comparison can fail: a changed spike train is found at its layer and step
    from neurodeploy.evaluate.inspect import compare_layers
    a = [np.zeros((1, 5, 3), np.uint8), np.zeros((1, 5, 2), np.uint8)]
    b = [a[0].copy(), a[1].copy()]
    b[1][0, 4, 1] = 1
    cmp = compare_layers(a, b, [0, 1])
    assert cmp[0].first_step is None and cmp[1].first_step == 4 and cmp[1].most_divergent == [1]


def _exact_pair(seed: int = 3):
    """A float graph and a fixed-point network that compute the same spikes exactly: binary inputs, even
    integer weights (Lava's 8-bit mixed-sign truncation keeps them), no leak (dv = 0, du = 4095: exact
    integer sums in both), float thresholds a quarter above the chip's (strict > on integers decides alike)."""
    from neurodeploy.graph import LIF, Affine, FloatGraph, Input
    from neurodeploy.ir import DenseLayer, InputEncoding, Network, Neurons

    rng = np.random.default_rng(seed)
    w1 = 2 * rng.integers(-20, 40, (8, 10))
    w2 = 2 * rng.integers(-20, 40, (4, 8))
    th = [60, 50]
    graph = FloatGraph(nodes=(Input((10,)), Affine(w1.astype(float)), LIF(leak=1.0, threshold=th[0] + 0.25),
                              Affine(w2.astype(float)), LIF(leak=1.0, threshold=th[1] + 0.25)), time_steps=12)
    layers = [DenseLayer(weight=w, neurons=Neurons(du=4095, dv=0, vth=t, bias_mant=np.zeros(w.shape[0], np.int64)))
              for w, t in ((w1, th[0]), (w2, th[1]))]
    net = Network(input_shape=(10,), layers=layers, time_steps=12, input_encoding=InputEncoding("spikes"))
    return graph, net


def test_an_exact_network_reports_agreement_and_a_broken_threshold_is_named(tmp_path):
    """Inspect on a network that is exactly its float model: agreement, no first divergence, no wraps or clips.
    Raise one layer's threshold on the chip: that layer is the first divergence, at the first step where
    its spikes change, and the emulator's traces (u, v) equal Lava's."""
    from neurodeploy.evaluate.inputs import ChipInputs
    from neurodeploy.evaluate.inspect import inspect_graph, write_inspection

    graph, net = _exact_pair()
    rng = np.random.default_rng(0)
    x = (rng.random((6, 12, 10)) < 0.5).astype(np.int64)
    inputs = ChipInputs(x, 1.0, False)
    same = inspect_graph(graph, net, inputs, lava_samples=2)
    assert same["first_divergence"] is None, same["first_divergence"]
    assert all(c["spike_agreement"] == 1.0 and c["u_wraps"] == 0 and c["v_clips"] == 0 for c in same["layers"])
    assert sum(c["fixed_spikes_per_sample"] for c in same["layers"]) > 10      # it spikes: agreement means something
    assert same["emulator_vs_lava"]["first_divergence"] is None
    net.layers[1].neurons.vth = 80                                              # broken on purpose
    broken = inspect_graph(graph, net, inputs)
    first = broken["first_divergence"]
    assert first["layer"] == 1 and broken["layers"][0]["first_step"] is None
    f, q = broken["traces"]["float"][1], broken["traces"]["fixed"][1]
    assert first["step"] == int(np.argmax((f != q).any(axis=(0, 2))))
    assert broken["layers"][1]["membrane_error_mean"] > same["layers"][1]["membrane_error_mean"]
    paths = write_inspection(broken, tmp_path)
    assert {p.name for p in paths} == {"inspect.json", "inspect.md", "inspect.png", "inspect_membrane.png"}
    md = (tmp_path / "inspect.md").read_text()
    assert "First divergence: layer 1" in md and "u wraps" in md
