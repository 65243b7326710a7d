"""Trustworthy comparisons: one deployed model behind every view, the same inputs on every backend,
a disagreement between the emulator and Lava stops the run, and no run is thrown away."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from neurodeploy.backends import run_network
from neurodeploy.cli import main
from neurodeploy.config import config_from_dict, load_config
from neurodeploy.data import load_dataset
from neurodeploy.evaluate.agreement import BackendDisagreement, first_difference, wilson_interval
from neurodeploy.evaluate.deployment import deployable_model, load_deployment
from neurodeploy.evaluate.inputs import chip_inputs, encoding_generator, float_run
from neurodeploy.evaluate.pipeline import ensure_run, run_pipeline
from neurodeploy.models import build_model
from neurodeploy.quant import load_profile, quantize_model
from neurodeploy.train.checkpoint import load_checkpoint
from neurodeploy.train.loop import RunError


def _config(tmp: Path, name: str = "tiny", **data_over) -> Path:
    """A small digits MLP config written to ``tmp`` (the pipeline takes a config file)."""
    cfg = yaml.safe_load(Path("models/mnist5k-mlp-dlif.yaml").read_text())
    cfg["name"] = name
    cfg["data"].update({"dataset": "digits", "time_steps": 6, **data_over})
    cfg["model"]["hidden"] = [24]
    cfg["training"].update({"epochs": 1, "augment_shift": 0})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A deploy folder made by the pipeline with fine-tuning (deployable float != trained float)."""
    tmp = tmp_path_factory.mktemp("deploy")
    report = run_pipeline(_config(tmp), run_dir=tmp / "run", lava_samples=3, finetune=1, progress=False,
                          log=lambda s: None)
    return tmp / "run", report


# --------------------------------------------------------------------------- same inputs


def _model(encoder: str, shape):
    data = {"dataset": "digits", "encoder": encoder, "time_steps": 5}
    if encoder == "temporal":
        data = {"dataset": "vowels", "encoder": "temporal", "time_steps": None}
    arch = "srnn" if encoder == "temporal" else "mlp"
    cfg = config_from_dict({"data": data, "model": {"arch": arch, "hidden": [10], "neuron": {"type": "dlif"}}})
    torch.manual_seed(0)
    model = build_model(cfg, shape, 3)
    T = shape[0] if encoder == "temporal" else 5
    return model, quantize_model(model, shape, load_profile("loihi2"), time_steps=T).network


@pytest.mark.parametrize("encoder, shape", [("direct", (1, 8, 8)), ("poisson", (1, 8, 8)),
                                            ("temporal", (7, 4))])
def test_same_seed_same_inputs_for_every_encoder(encoder, shape):
    model, net = _model(encoder, shape)
    x = torch.rand(6, *shape, generator=torch.Generator().manual_seed(3))
    a = chip_inputs(model, net, x, torch.Generator().manual_seed(1))
    b = chip_inputs(model, net, x, torch.Generator().manual_seed(1))
    c = chip_inputs(model, net, x, torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(a.values, b.values)
    assert a.values.shape == (6, net.time_steps, *net.input_shape)
    if encoder == "poisson":
        assert not np.array_equal(a.values, c.values)       # another seed, other spikes
        assert set(np.unique(a.values)) <= {0, 1}
        with pytest.raises(ValueError, match="seeded generator"):
            chip_inputs(model, net, x)
    else:
        np.testing.assert_array_equal(a.values, c.values)   # deterministic encoders
    assert getattr(model.encoder, "generator", None) is None   # the model was not mutated
    # the float model reads exactly these values: its answer on them equals its own encoding for
    # deterministic encoders, and the emulator takes the very same array
    out = float_run(model, a)
    if encoder != "poisson":
        with torch.no_grad():
            ref = model.output_sequence(x).sum(0).numpy().astype(np.int64)
        np.testing.assert_array_equal(out["output_counts"], ref)
    assert run_network(net, a.values).output_spikes.shape[0] == 6


def test_poisson_float_spikes_follow_the_seed_not_the_global_rng():
    model, net = _model("poisson", (1, 8, 8))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    inputs = chip_inputs(model, net, x, torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    first = float_run(model, inputs)
    torch.manual_seed(99)                          # the global RNG plays no part
    second = float_run(model, inputs)
    np.testing.assert_array_equal(first["layer_spikes"], second["layer_spikes"])


# --------------------------------------------------------------------------- one deployed model


def test_deployable_model_folds_the_gain_and_is_what_is_quantized():
    model, _ = _model("direct", (1, 8, 8))
    with torch.no_grad():
        for layer in model.spiking_layers():
            layer.gain.copy_(torch.linspace(0.5, 1.5, layer.gain.shape[0]))
    dep = deployable_model(model)
    assert all(float(layer.gain.std()) == 0.0 and not layer.gain.requires_grad for layer in dep.spiking_layers())
    assert all(float(layer.gain.detach().std()) > 0 for layer in model.spiking_layers())   # the input model is untouched
    hw = load_profile("loihi2")
    a = quantize_model(model, (1, 8, 8), hw, time_steps=5).network
    b = quantize_model(dep, (1, 8, 8), hw, time_steps=5).network
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.weight, lb.weight)
        assert la.neurons.vth == lb.neurons.vth


@pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")
def test_every_view_of_a_deploy_folder_is_the_reported_model(deployed):
    """netx (emulator), NIR (Norse from_nir) and ONNX (onnxruntime) of the folder give the report's numbers."""
    import nir
    from norse.torch import from_nir

    from neurodeploy.io import read_netx, run_onnx, step_interface

    run, report = deployed
    dep = load_deployment(run, "loihi2", log=lambda s: None)
    assert dep.finetune_epochs == 1
    cfg = dep.cfg
    data = load_dataset(cfg.data.dataset, seed=cfg.seed)
    x, y = data.x_test, data.y_test
    assert report["test_samples"] == len(y)
    inputs = dep.inputs(x, encoding_generator(cfg.seed))
    # fixed point: the exported netx file, read back and run
    net = read_netx(run / "loihi2" / "network.net")
    fixed = run_network(net, inputs.values).predictions()
    assert np.mean(fixed == y) == pytest.approx(report["fixed_point"]["accuracy"], abs=0)
    # float: ONNX stepped T times and NIR through Norse, on the same values
    seq = np.moveaxis(np.asarray(inputs.values, dtype=np.float32), 1, 0) / inputs.scale   # (T, B, ...)
    onnx_path = run / "loihi2" / "model_step.onnx"
    assert step_interface(onnx_path)["inputs"]["x"] == list(net.input_shape)   # the sample's own shape
    onnx_pred = run_onnx(onnx_path, seq).sum(0).argmax(1)
    module = from_nir(nir.read(str(run / "loihi2" / "model.nir")), dt=1.0)
    nir_pred = []
    with torch.no_grad():
        for k in range(seq.shape[1]):     # NIR graphs are per sample (its Flatten has no batch axis)
            state, total = None, 0
            for t in range(seq.shape[0]):
                o, state = module(torch.from_numpy(seq[t, k]), state)
                total = total + o
            nir_pred.append(int(torch.argmax(total)))
    nir_pred = np.array(nir_pred)
    torch_pred = float_run(dep.model, inputs)["predictions"]
    np.testing.assert_array_equal(onnx_pred, torch_pred)
    np.testing.assert_array_equal(nir_pred, torch_pred)
    assert np.mean(torch_pred == y) == pytest.approx(report["float"]["accuracy"], abs=0)
    # and the deployable float model is the fine-tuned one, not the trained one
    trained_pred = float_run(dep.trained, inputs)["predictions"]
    assert np.mean(trained_pred == y) == pytest.approx(report["trained_float"]["accuracy"], abs=0)
    tuned = load_checkpoint(run / "loihi2" / "finetuned.pt")["model"]
    assert any(not torch.equal(v, dep.trained.state_dict()[k]) for k, v in tuned.items())


def test_the_report_is_a_loss_ladder_on_the_same_samples(deployed):
    run, report = deployed
    rungs = [r["rung"] for r in report["ladder"]]
    assert rungs == ["trained float", "deployable float", "fixed point"]
    sub = report["lava_subset"]
    assert sub["samples"] == 3 and [r["rung"] for r in sub["ladder"]] == rungs + ["Lava"]
    for r in report["ladder"] + sub["ladder"]:
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert r["correct"] == round(r["accuracy"] * r["samples"])
    assert all(r["samples"] == 3 for r in sub["ladder"])
    # Lava is the fixed-point network: same predictions as the emulator on that subset
    assert sub["ladder"][3]["agreement_with_previous"] == 1.0
    assert sub["ladder"][3]["accuracy"] == sub["ladder"][2]["accuracy"]
    assert report["emulator_vs_lava"]["identical"] and report["error"] is None
    md = (run / "loihi2" / "report.md").read_text()
    assert "Loss ladder on all" in md and "the first 3 test samples (the Lava subset)" in md


def test_wilson_interval():
    lo, hi = wilson_interval(95, 100)
    assert lo == pytest.approx(0.888, abs=1e-3) and hi == pytest.approx(0.978, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_poisson_pipeline_same_seed_same_report(tmp_path):
    def numbers(seed, where):
        cfg = _config(tmp_path, f"pois{where}", encoder="poisson")
        rep = run_pipeline(cfg, run_dir=tmp_path / where, lava_samples=0, finetune=0, seed=seed,
                           progress=False, log=lambda s: None)
        return [(r["accuracy"], r["spikes_per_sample"], r["synops_per_sample"]) for r in rep["ladder"]]

    a, b, c = numbers(0, "a"), numbers(0, "b"), numbers(1, "c")
    assert a == b
    assert a != c


# --------------------------------------------------------------------------- disagreement is an error


def _flip(result, sample, layer, step):
    """A copy of a Lava result with one spike of (sample, layer, step) flipped."""
    import copy

    out = copy.deepcopy(result)
    spikes = out.layer_spikes[layer]
    spikes[sample, step, 0] ^= 1
    out.spike_counts[sample, layer] = int(spikes[sample].sum())
    if layer == len(out.layer_spikes) - 1:
        out.output_spikes[sample, step, 0] ^= 1
    return out


def test_first_difference_names_sample_layer_and_step():
    from test_backends import random_inputs, random_network

    rng = np.random.default_rng(4)
    net = random_network(rng, "dense", max_layers=3, max_width=8)
    x = random_inputs(rng, net, 4)
    emu = run_network(net, x, backend="emulator")
    lava = run_network(net, x, backend="lava", record_spikes=True)
    assert first_difference(net, x, emu, lava) is None
    emu_rec = run_network(net, x, backend="emulator", record_spikes=True)
    for a, b in zip(emu_rec.layer_spikes, lava.layer_spikes):     # both record every layer, every step
        np.testing.assert_array_equal(a, b)
    d = first_difference(net, x, emu, _flip(lava, 2, 0, 3))
    assert (d["sample"], d["layer"], d["step"], d["samples_differing"]) == (2, 0, 3, 1)
    assert d["neurons"] == [0]


def test_pipeline_and_evaluate_fail_on_a_disagreement(tmp_path, monkeypatch, capsys):
    """A (simulated) emulator bug: the report is written and says so at the top, the command exits 3."""
    import neurodeploy.backends.emulator as emulator

    real = emulator.Emulator.run_batch

    def buggy(self, x, *args, **kwargs):
        out, counts, us, vs, spikes = real(self, x, *args, **kwargs)
        if len(x) > 1:                       # a full-split batch; first_difference's rerun stays right
            counts = counts.copy()
            counts[1, 0] += 1
        return out, counts, us, vs, spikes

    cfg = _config(tmp_path)
    run = tmp_path / "run"
    monkeypatch.setattr(emulator.Emulator, "run_batch", buggy)
    rc = main(["pipeline", "--config", str(cfg), "--out", str(run), "--finetune", "0", "--lava-samples", "3",
               "--samples", "40", "--quiet"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "emulator and Lava disagree" in err and "sample 1" in err
    report = json.loads((run / "loihi2" / "report.json").read_text())
    assert report["error"] and report["emulator_vs_lava"]["first_difference"]["sample"] == 1
    assert (run / "loihi2" / "report.md").read_text().startswith("> **ERROR")
    rc = main(["evaluate", str(run), "--backends", "float,emulator,lava", "--lava-samples", "3", "--samples", "40",
               "--noise", "gaussian:0", "--report", str(tmp_path / "rep"), "--quiet"])
    assert rc == 3
    assert "sample 1" in capsys.readouterr().err
    assert (tmp_path / "rep" / "robustness.md").read_text().startswith("> **ERROR")
    monkeypatch.setattr(emulator.Emulator, "run_batch", real)
    assert main(["evaluate", str(run), "--backends", "float,emulator,lava", "--lava-samples", "3",
                 "--samples", "40", "--noise", "gaussian:0", "--quiet"]) == 0


# --------------------------------------------------------------------------- never throw a run away


def test_pipeline_reuses_resumes_and_refuses(tmp_path, capsys):
    path = _config(tmp_path)
    run = tmp_path / "run"
    logs = []
    assert ensure_run(load_config(path), run, progress=False, log=logs.append) == "trained"
    first = load_checkpoint(run / "checkpoint.pt")
    assert ensure_run(load_config(path), run, progress=False, log=logs.append) == "reused"
    assert ensure_run(load_config(path, {"training.epochs": 2}), run, progress=False, log=logs.append) == "resumed"
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["epoch"] == 2 and ck["config"]["training"]["epochs"] == 2
    # the resumed run continued the first one (epoch 1's metrics kept), not a new one
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert first["epoch"] == 1
    # any other difference: refused, naming the keys, unless --force
    rc = main(["pipeline", "--config", str(path), "--out", str(run), "--epochs", "2", "--seed", "7",
               "--lava-samples", "0", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "seed" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert load_checkpoint(run / "checkpoint.pt")["config"]["seed"] == 0     # untouched
    rc = main(["pipeline", "--config", str(path), "--out", str(run), "--lava-samples", "0", "--quiet"])
    assert rc == 2 and "training.epochs (2 there, 1 asked)" in capsys.readouterr().err
    assert ensure_run(load_config(path, {"seed": 7}), run, force=True, progress=False,
                      log=logs.append) == "retrained"
    assert load_checkpoint(run / "checkpoint.pt")["config"]["seed"] == 7


def test_evaluate_refuses_a_deploy_folder_of_an_older_checkpoint(tmp_path, capsys):
    path = _config(tmp_path)
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(path), "--out", str(run), "--finetune", "1", "--lava-samples", "0",
                 "--samples", "20", "--quiet"]) == 0
    manifest = json.loads((run / "loihi2" / "deployment.json").read_text())
    assert manifest["finetune_epochs"] == 1 and manifest["finetuned_sha256"]
    assert main(["train", "--config", str(path), "--out", str(run), "--force", "--seed", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--noise", "gaussian:0", "--samples", "20", "--quiet"]) == 2
    assert "earlier checkpoint" in capsys.readouterr().err
    with pytest.raises(RunError, match="earlier checkpoint"):
        load_deployment(run, "loihi2", log=lambda s: None)


def test_poisson_sweep_with_attacks_is_reproducible_and_level0_is_clean():
    from neurodeploy.evaluate.robustness import parse_noise_spec, sweep

    model, _ = _model("poisson", (1, 8, 8))
    quant = quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=5)
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(1))
    specs = [parse_noise_spec("fgsm:0,0.2"), parse_noise_spec("gaussian:0,0.3")]

    def rows(seed, global_seed):
        torch.manual_seed(global_seed)                # must play no part
        return [(r["backend"], r["noise"], r["level"], r["accuracy"], r["spikes_per_sample"])
                for r in sweep(model, x, y, specs, 1, seed, ("float", "emulator"), quant)]

    a, b, c = rows(0, 1), rows(0, 2), rows(3, 1)
    assert a == b
    assert a != c                                     # another seed: other spikes and noise
    assert getattr(model.encoder, "generator", None) is None
    clean = {r[0]: r[3:] for r in a if r[2] == 0.0}
    assert all(r[3:] == clean[r[0]] for r in a if r[2] == 0.0)


def test_a_run_from_before_a_new_config_key_is_still_the_same_run(tmp_path):
    """A key added to the config since a run was trained takes its default: the run is reused."""
    import torch as _torch

    path = _config(tmp_path)
    run = tmp_path / "run"
    assert ensure_run(load_config(path), run, progress=False, log=lambda s: None) == "trained"
    ck = load_checkpoint(run / "checkpoint.pt")
    del ck["config"]["model"]["batchnorm"]          # as written before model.batchnorm existed
    _torch.save(ck, run / "checkpoint.pt")
    assert ensure_run(load_config(path), run, progress=False, log=lambda s: None) == "reused"


def test_a_malformed_deployment_manifest_is_a_clear_error(deployed, tmp_path, capsys):
    import shutil

    run, _ = deployed
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = copy / "loihi2" / "deployment.json"
    for text, needle in (("{not json", "not readable JSON"), ('{"finetune_epochs": "two"}', "integer 'finetune_epochs'")):
        manifest.write_text(text)
        with pytest.raises(RunError, match=needle) as err:
            load_deployment(copy, "loihi2", log=lambda s: None)
        assert "deployment.json" in str(err.value)
        assert main(["evaluate", str(copy), "--noise", "gaussian:0", "--samples", "10", "--quiet"]) == 2
        assert "deployment.json" in capsys.readouterr().err
