"""Robustness sweeps: noise specs, seeds, level 0, and the float/emulator/Lava backends."""

import json

import numpy as np
import pytest
import torch

from neurodeploy.backends import run_network
from neurodeploy.evaluate.inputs import chip_inputs, encoding_generator

from neurodeploy.cli import main
from neurodeploy.evaluate.robustness import NoiseSpecError, parse_backends, parse_noise_spec, sweep
from neurodeploy.quant import load_profile, quantize_model
from neurodeploy.train import train
from neurodeploy.config import load_config
from neurodeploy.data import load_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config("models/mnist5k-mlp-dlif.yaml", {"training.epochs": 1, "model.hidden": [32], "threads": 1})
    data = load_dataset("mnist5k", seed=0).subset(512, 60)
    result = train(cfg, out, progress=False, data=data, log=lambda s: None)
    return out, result.model, data


@pytest.mark.parametrize("spec, needle", [
    ("gaussian", "expected NAME:LEVEL"),
    ("wobble:0.1", "unknown noise 'wobble'"),
    ("gaussian:-0.1", "negative"),
    ("salt-pepper:1.5", "above 1"),
    ("gaussian:abc", "'abc' is not a number"),
    ("gaussian:", "no levels"),
    ("pgd:1/0", "is not a number"),
])
def test_bad_noise_specs_name_the_spec(spec, needle):
    with pytest.raises(NoiseSpecError) as err:
        parse_noise_spec(spec)
    assert needle in str(err.value) and repr(spec) in str(err.value)


def test_noise_spec_parsing():
    spec = parse_noise_spec("pgd:0,8/255, 0.1")
    assert spec.name == "pgd" and spec.levels == (0.0, 8 / 255, 0.1)
    assert parse_backends("float, lava") == ("float", "lava")
    with pytest.raises(NoiseSpecError, match="gpu"):
        parse_backends("float,gpu")


def test_sweep_level0_seeds_and_backends(trained):
    _, model, data = trained
    x, y = torch.as_tensor(data.x_test[:40]), torch.as_tensor(data.y_test[:40])
    net = quantize_model(model, (1, 28, 28), load_profile("loihi2"), time_steps=8)
    specs = [parse_noise_spec("gaussian:0,0.3"), parse_noise_spec("fgsm:0,8/255")]
    rows = sweep(model, x, y, specs, 1, 0, ("float", "emulator", "lava"), net, lava_samples=3)
    by = {(r["backend"], r["noise"], r["level"]): r for r in rows}
    # level 0 is the clean result, identical for every noise, on every backend
    for backend in ("float", "emulator", "lava"):
        assert by[(backend, "gaussian", 0.0)]["accuracy"] == by[(backend, "fgsm", 0.0)]["accuracy"]
    # ... and it is the clean result, computed here without the sweep (the sweep
    # copies level 0 between noises, so compare with an independent computation)
    inputs = chip_inputs(model, net.network, x, encoding_generator(0))
    with torch.no_grad():
        float_clean = float((model(x).argmax(1) == y).float().mean())
    emu_pred = run_network(net.network, inputs.values).predictions()
    lava_pred = run_network(net.network, inputs.values[:3], backend="lava").predictions()
    assert by[("float", "gaussian", 0.0)]["accuracy"] == pytest.approx(float_clean)
    assert by[("emulator", "gaussian", 0.0)]["accuracy"] == pytest.approx(float(np.mean(emu_pred == y.numpy())))
    assert by[("lava", "gaussian", 0.0)]["accuracy"] == pytest.approx(float(np.mean(lava_pred == y.numpy()[:3])))
    assert 0.3 < float_clean  # a trained model, so equal accuracies are not all-zero coincidences
    # Lava agrees with the emulator spike for spike at every level
    assert all(r["emulator_identical_spikes"] == 1.0 for r in rows if r["backend"] == "lava")
    # same seed: same numbers; different seed: different perturbation
    again = sweep(model, x, y, [specs[0]], 1, 0, ("float", "emulator"), net)
    assert [r["spikes_per_sample"] for r in again] == [r["spikes_per_sample"] for r in rows
                                                       if r["noise"] == "gaussian" and r["backend"] != "lava"]
    other = sweep(model, x, y, [parse_noise_spec("gaussian:0.3")], 1, 1, ("float",), net)
    assert other[0]["spikes_per_sample"] != by[("float", "gaussian", 0.3)]["spikes_per_sample"]


def test_hardware_noise_sweep_matches_across_backends(trained):
    _, model, data = trained
    x, y = torch.as_tensor(data.x_test[:30]), torch.as_tensor(data.y_test[:30])
    quant = quantize_model(model, (1, 28, 28), load_profile("loihi2"), time_steps=8)
    specs = [parse_noise_spec(s) for s in ("weight-mismatch:0,0.3", "dead-neuron:0,0.5", "bit-flip:0.05",
                                           "stuck-neuron:0.2", "threshold-mismatch:0.3")]
    rows = sweep(model, x, y, specs, 1, 0, ("float", "emulator", "lava"), quant, lava_samples=2)
    assert all(r["emulator_identical_spikes"] == 1.0 for r in rows if r["backend"] == "lava")
    by = {(r["backend"], r["noise"], r["level"]): r for r in rows}
    for backend in ("float", "emulator"):
        # half the neurons dead: much less activity on both sides
        assert by[(backend, "dead-neuron", 0.5)]["spikes_per_sample"] < by[(backend, "dead-neuron", 0.0)][
            "spikes_per_sample"]
    # step noises run too (tests/test_step_noise.py covers them); without the quantized network: an error
    with pytest.raises(NoiseSpecError, match="spike-drop"):
        sweep(model, x, y, [parse_noise_spec("spike-drop:0.1")], 1, 0, ("float",), None)


def test_cli_evaluate_writes_report(trained, tmp_path, capsys):
    run, _, _ = trained
    rc = main(["evaluate", str(run), "--noise", "gaussian:0,0.2", "--backends", "float,emulator,lava",
               "--lava-samples", "2", "--samples", "30", "--report", str(tmp_path / "rep"), "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "rep" / "robustness.json").read_text())
    backends = {s["backend"] for s in report["runs"][0]["summary"]}
    assert backends == {"float", "emulator", "lava"}
    assert (tmp_path / "rep" / "robustness.png").stat().st_size > 0
    assert "emulator" in (tmp_path / "rep" / "robustness.md").read_text()
    assert main(["evaluate", str(run), "--noise", "gaussian:-1"]) == 2
    assert "gaussian:-1" in capsys.readouterr().err
