"""The deployment commands end to end: simulate (netx files we did not write), quantize, export, pipeline."""

import json
import multiprocessing
from pathlib import Path

import h5py
import numpy as np
import pytest

from neurodeploy.cli import main


def _hand_netx(path: Path, mutate=None) -> None:
    """A 3 -> 2 -> 2 netx file written by hand with h5py, following lava-dl's conventions.

    The same network as tests/test_backends.py::hand_network: netx maps
    du = iDecay - 1, dv = vDecay, vth = vThMant, bias_mant = bias (bias_exp 6).
    """
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        inp = layers.create_group("0")
        inp.create_dataset("type", data=np.bytes_("input"))
        inp.create_dataset("shape", data=np.array([3]))
        for i, (w, idecay, vdecay, vth, bias) in enumerate([
            ([[10, 20, 0], [0, 30, -40]], 4096, 0, 25, [0, 0]),
            ([[50, 0], [-20, 40]], 2048, 2048, 30, [0, 1]),  # bias 1 << 6 = 64 = 8 << 3
        ], start=1):
            g = layers.create_group(str(i))
            g.create_dataset("type", data=np.bytes_("dense"))
            g.create_dataset("shape", data=np.array([2]))
            g.create_dataset("weight", data=np.array(w, dtype=np.float32))
            g.create_dataset("bias", data=np.array(bias, dtype=np.float32))
            n = g.create_group("neuron")
            n.create_dataset("type", data=np.bytes_("CUBA"))
            n.create_dataset("iDecay", data=idecay)
            n.create_dataset("vDecay", data=vdecay)
            n.create_dataset("vThMant", data=vth)
            n.create_dataset("refDelay", data=1)
        if mutate:
            mutate(f)


HAND_X = np.array([[[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]]])
# derived step by step in tests/test_backends.py::test_hand_network
HAND_OUT = np.array([[[0, 0], [0, 0], [0, 0], [1, 0], [0, 0], [1, 0]]])


@pytest.mark.parametrize("backend", ["lava", "emulator"])
def test_simulate_hand_made_netx_file(tmp_path, backend):
    _hand_netx(tmp_path / "hand.net")
    np.save(tmp_path / "x.npy", HAND_X)
    rc = main(["simulate", str(tmp_path / "hand.net"), "--backend", backend, "--input", str(tmp_path / "x.npy"),
               "--out", str(tmp_path / "out.npz"), "--quiet"])
    assert rc == 0
    out = np.load(tmp_path / "out.npz")
    # netx's time base: T = 4 steps, as netx returns them; --drain adds the latency (2 layers)
    np.testing.assert_array_equal(out["output_spikes"], HAND_OUT[:, :4])
    assert int(out["latency"]) == 2 and int(out["steps"]) == 4
    np.testing.assert_array_equal(out["spike_counts"], [[3, 2]])
    np.testing.assert_array_equal(out["predictions"], [0])
    rc = main(["simulate", str(tmp_path / "hand.net"), "--backend", backend, "--input", str(tmp_path / "x.npy"),
               "--out", str(tmp_path / "drained.npz"), "--quiet", "--drain", "--record-state"])
    assert rc == 0
    out = np.load(tmp_path / "drained.npz")
    np.testing.assert_array_equal(out["output_spikes"], HAND_OUT)
    np.testing.assert_array_equal(out["spikes_1"], HAND_OUT)
    assert out["u_0"].shape == out["v_0"].shape == (1, 6, 2) and int(out["spikes_0"].sum()) == 3


@pytest.mark.parametrize("mutate, needle", [
    (lambda f: (f["layer/1/neuron"].pop("type"), f["layer/1/neuron"].create_dataset("type", data=np.bytes_("RF"))),
     "neuron/type"),
    (lambda f: (f["layer/2"].pop("weight"), f["layer/2"].create_dataset("weight", data=np.ones((2, 5), "f4"))),
     "weight"),
    (lambda f: (f["layer/1"].pop("weight"), f["layer/1"].create_dataset("weight", data=np.full((2, 3), np.nan, "f4"))),
     "nan"),
    (lambda f: (f["layer/2"].pop("type"), f["layer/2"].create_dataset("type", data=np.bytes_("pool"))), "pool"),
    (lambda f: (f["layer/2"].pop("type"), f["layer/2"].create_dataset("type", data=np.bytes_("wobble"))), "wobble"),
])
def test_simulate_malformed_netx_is_a_clear_error_without_lava(tmp_path, capsys, mutate, needle):
    path = tmp_path / "bad.net"
    _hand_netx(path, mutate)
    np.save(tmp_path / "x.npy", HAND_X)
    before = set(multiprocessing.active_children())
    rc = main(["simulate", str(path), "--backend", "lava", "--input", str(tmp_path / "x.npy"),
               "--out", str(tmp_path / "out.npz"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(path) in err and needle in err.lower() and "Traceback" not in err
    assert not (tmp_path / "out.npz").exists()
    assert set(multiprocessing.active_children()) <= before  # no Lava process was started


def test_simulate_rejects_wrong_input_shape(tmp_path, capsys):
    _hand_netx(tmp_path / "hand.net")
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 5), dtype=np.int64))
    assert main(["simulate", str(tmp_path / "hand.net"), "--input", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "o.npz")]) == 2
    assert "shape" in capsys.readouterr().err


def test_pipeline_quantize_export_simulate(tmp_path):
    run = tmp_path / "run"
    rc = main(["pipeline", "--config", "models/mnist5k-mlp-dlif.yaml", "--out", str(run), "--epochs", "1",
               "--finetune", "0", "--lava-samples", "4", "--samples", "200", "--quiet"])
    assert rc == 0
    out = run / "loihi2"
    for name in ("network.net", "model.nir", "model_step.onnx", "quantization.json", "quantization.md",
                 "report.json", "report.md", "report.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["test_samples"] == 200
    assert report["lava"]["emulator_identical_output_spikes"] == 1.0
    assert 0.5 < report["float"]["accuracy"] <= 1.0
    assert abs(report["accuracy_drop"]) < 0.1
    # the exported file runs through simulate and reproduces the pipeline's fixed-point predictions
    rc = main(["simulate", str(out / "network.net"), "--backend", "emulator", "--data", "mnist5k",
               "--samples", "200", "--out", str(tmp_path / "sim.npz"), "--quiet"])
    assert rc == 0
    sim = np.load(tmp_path / "sim.npz")
    assert float(np.mean(sim["predictions"] == sim["labels"])) == pytest.approx(report["fixed_point"]["accuracy"])
    # quantize and export commands
    assert main(["quantize", str(run), "--profile", "loihi1", "--quiet"]) == 0
    assert (run / "loihi1" / "network.net").is_file()
    for fmt, name in (("nir", "m.nir"), ("onnx", "m.onnx"), ("hdf5", "m.net")):
        assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / name), "--quiet"]) == 0
        assert (tmp_path / name).is_file()


def test_quantize_with_finetune(tmp_path):
    from neurodeploy.train import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "--config", "models/mnist5k-mlp-dlif.yaml", "--out", str(run), "--epochs", "1",
                 "--quiet"]) == 0
    assert main(["quantize", str(run), "--finetune", "1", "--quiet"]) == 0
    tuned = load_checkpoint(run / "loihi2" / "finetuned.pt")
    assert tuned["finetune_epochs"] == 1
    gains = [v for k, v in tuned["model"].items() if k.endswith("gain")]
    assert gains and all(float(g.std()) == 0.0 for g in gains)  # frozen at their mean
    assert (run / "loihi2" / "network.net").is_file()
    # export gives the deployed (fine-tuned) model, not the trained one
    import nir

    from neurodeploy.evaluate.deployment import deployable_model, load_deployment
    from neurodeploy.io import export_nir
    from neurodeploy.train import load_run

    assert main(["export", str(run), "--format", "nir", "--out", str(tmp_path / "m.nir"), "--quiet"]) == 0
    cfg, trained, ckpt = load_run(run)
    export_nir(load_deployment(run, "loihi2", log=lambda m: None).model, tmp_path / "deployed.nir",
               input_shape=tuple(ckpt["input_shape"]), time_steps=cfg.data.time_steps)
    export_nir(deployable_model(trained), tmp_path / "trained.nir", input_shape=tuple(ckpt["input_shape"]),
               time_steps=cfg.data.time_steps)

    def weights(path):
        graph = nir.read(str(path))
        return [np.asarray(n.weight) for _, n in sorted(graph.nodes.items()) if hasattr(n, "weight")]

    got, deployed, untuned = weights(tmp_path / "m.nir"), weights(tmp_path / "deployed.nir"), weights(
        tmp_path / "trained.nir")
    assert len(got) == len(deployed) > 0
    assert all(np.array_equal(a, b) for a, b in zip(got, deployed))
    assert not all(np.array_equal(a, b) for a, b in zip(got, untuned))
