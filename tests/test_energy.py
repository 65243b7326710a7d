"""Energy and latency estimate: counted from real emulator runs, always a [low, high] range, priced with the
profile's published costs, and checked against lava-dl's PilotNet LIF measurement on Loihi 2; the pipeline
report carries it with the fit summary."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from neurodeploy.backends import run_network
from neurodeploy.backends.emulator import Emulator
from neurodeploy.evaluate.energy import (PILOTNET_LIF_LOIHI2, Activity, activity_of, compare_with_published,
                                         energy_markdown, estimate_energy)
from neurodeploy.evaluate.pipeline import inspect_hint
from neurodeploy.ir import DenseLayer, Network, Neurons
from neurodeploy.quant.profile import load_profile, profile_from_dict

ROOT = Path(__file__).resolve().parents[1]
PLIF = ROOT.parent / "shared" / "fixtures" / "lava-dl" / "netx" / "gts" / "pilotnet_lif"
RANGES = ("energy_uj", "dynamic_energy_uj", "static_energy_uj", "time_per_step_us", "latency_us")


def _net():
    """16 graded inputs -> 6 -> 3, weights on Lava's grid, thresholds low enough to spike."""
    rng = np.random.default_rng(0)
    w0 = 2 * rng.integers(0, 8, size=(6, 16))
    w1 = 2 * rng.integers(0, 8, size=(3, 6))
    layers = [DenseLayer(weight=w0.astype(np.int64), neurons=Neurons(du=4095, dv=512, vth=40,
                                                                     bias_mant=np.zeros(6, np.int64)), name="h"),
              DenseLayer(weight=w1.astype(np.int64), neurons=Neurons(du=4095, dv=512, vth=20,
                                                                     bias_mant=np.zeros(3, np.int64)), name="o")]
    return Network(input_shape=(16,), layers=layers, time_steps=8).validate()


def _run(net, scale):
    x = np.random.default_rng(1).integers(0, 256, size=(5, 8, 16)) * scale
    res = run_network(net, x.astype(np.int64))
    return res, (x != 0).reshape(5, -1).sum(1)


def test_counts_are_spikes_times_fan_out_and_neurons_times_steps():
    net = _net()
    res, nz = _run(net, 1)
    act = activity_of(res, nz)
    est = estimate_energy(net, load_profile("loihi2"), act)
    spikes = res.spike_counts.mean(0)
    fan_in_0 = (net.layers[0].weight != 0).sum() / 16             # synapses per input value
    fan_h = (net.layers[1].weight != 0).sum() / 6                 # synapses per hidden spike
    assert spikes[0] > 0
    assert est.synaptic_ops == pytest.approx(nz.mean() * fan_in_0 + spikes[0] * fan_h)
    assert est.neuron_updates == 9 * res.total_steps and est.time_steps == res.total_steps == 8 + 2
    assert est.spikes == pytest.approx(nz.mean() + spikes.sum())


def test_every_figure_is_an_ordered_range_and_grows_with_activity():
    net = _net()
    profile = load_profile("loihi2")
    quiet = estimate_energy(net, profile, activity_of(*_run(net, 0)))
    busy = estimate_energy(net, profile, activity_of(*_run(net, 1)))
    for est in (quiet, busy):
        for key in RANGES:
            lo, hi = getattr(est, key)
            assert 0 <= lo <= hi, key
        assert est.energy_uj[0] < est.energy_uj[1]            # a real range, never one unqualified number
        assert est.energy_uj == pytest.approx([d + s for d, s in zip(est.dynamic_energy_uj, est.static_energy_uj)])
    assert quiet.synaptic_ops == 0 and busy.synaptic_ops > 0
    assert busy.dynamic_energy_uj[0] > quiet.dynamic_energy_uj[0]
    assert busy.dynamic_energy_uj[1] > quiet.dynamic_energy_uj[1]
    # the quiet network still costs its neuron updates: 9 neurons x 10 steps x 52..81 pJ
    assert quiet.dynamic_energy_uj == pytest.approx([90 * 52e-6, 90 * 81e-6])
    md = energy_markdown(busy)
    assert "| energy (uJ) |" in md and "not a measurement" in md and "Assumptions:" in md


def test_the_profile_prices_the_operations():
    """Doubling every energy cost doubles the dynamic energy; a profile without energy: gives no estimate."""
    data = yaml.safe_load((ROOT / "hw_profiles" / "loihi2.yaml").read_text())
    base = profile_from_dict(data, "a.yaml")
    for k in ("synaptic_op_pj", "neuron_update_pj", "spike_pj", "hop_pj"):
        data["energy"][k] = [2 * v for v in data["energy"][k]]
    double = profile_from_dict(data, "b.yaml")
    net = _net()
    act = activity_of(*_run(net, 1))
    a, b = estimate_energy(net, base, act), estimate_energy(net, double, act)
    assert b.dynamic_energy_uj == pytest.approx([2 * v for v in a.dynamic_energy_uj])
    assert b.latency_us == a.latency_us
    del data["energy"]
    assert estimate_energy(net, profile_from_dict(data, "c.yaml"), act) is None
    with pytest.raises(ValueError, match="2 layers"):
        estimate_energy(net, base, Activity(1.0, [1.0], 4))


def test_pilotnet_lif_against_lava_dl_measurement_on_loihi2():
    """lava-dl's PilotNet LIF benchmark on Loihi 2: 1,386 uJ dynamic and 2,414 uJ total energy per 16-step
    inference, 182.6 us per step (342.29 fps). The same network (gts/pilotnet_lif, its recorded image as the
    input population's bias) on the emulator, its activity priced with the loihi2 profile: every measured
    figure lies inside the estimated range, the dynamic energy within a factor 1.3 of either end."""
    if not (PLIF / "network.net").exists():
        pytest.skip("shared fixtures not available")
    from neurodeploy.io import read_netx

    T = 32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = read_netx(PLIF / "network.net", time_steps=T)
    net.reset_interval = 16                   # one frame per 16 steps, as the benchmark runs it
    img = np.load(PLIF / "image.npy").transpose(2, 1, 0)[None].astype(np.int64)
    x = np.zeros((1, T, *net.input_shape), np.int64)
    res = run_network(net, x, bias=img)
    steps = res.total_steps
    input_spikes = Emulator(net)._input_population(x, img, steps).sum()   # the input population's spikes
    per = PILOTNET_LIF_LOIHI2["steps_per_inference"] / steps              # per 16-step inference
    act = Activity(float(input_spikes) * per, (res.spike_counts[0] * per).tolist(), 16)
    est = estimate_energy(net, load_profile("loihi2"), act)
    cmp = compare_with_published(est)
    for key in ("dynamic_energy_uj", "total_energy_uj", "time_per_step_us"):
        lo, hi = cmp[key]["measured_over_estimated"]
        assert lo <= 1 <= hi, (key, cmp[key])
    lo, hi = cmp["dynamic_energy_uj"]["measured_over_estimated"]
    assert 1 / 1.6 <= lo and hi <= 1.3, cmp["dynamic_energy_uj"]
    print(json.dumps(cmp, indent=1))


def test_inspect_is_suggested_above_one_percent_disagreement():
    assert inspect_hint("runs/x", "loihi2", 0.995) is None
    assert inspect_hint("runs/x", "loihi2", 0.99) is None
    hint = inspect_hint("runs/x", "loihi1", 0.98)
    assert hint["command"] == "neurodeploy inspect runs/x --profile loihi1"
    assert hint["disagreement"] == pytest.approx(0.02)


def _config(tmp: Path) -> Path:
    """The cheapest pipeline of tests/test_comparisons.py: a digits MLP, 6 steps, one epoch."""
    cfg = yaml.safe_load((ROOT / "models" / "mnist5k-mlp-dlif.yaml").read_text())
    cfg["name"] = "tiny"
    cfg["data"].update({"dataset": "digits", "time_steps": 6})
    cfg["model"]["hidden"] = [24]
    cfg["training"].update({"epochs": 1, "augment_shift": 0})
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pipeline_report_has_fit_and_energy(tmp_path, monkeypatch):
    from neurodeploy.evaluate.pipeline import run_pipeline

    monkeypatch.chdir(ROOT)
    report = run_pipeline(_config(tmp_path), run_dir=tmp_path / "run", lava_samples=0, finetune=0,
                          test_samples=60, progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "run" / "loihi2" / "report.json").read_text())
    assert saved["fit"]["fits"] and saved["fit"]["cores"] == 2 and saved["fit"]["tightest"]["resource"]
    e = saved["energy"]
    for key in RANGES:
        assert 0 <= e[key][0] <= e[key][1]
    assert e["time_steps"] == report["time_steps"] + report["latency"]
    assert e["synaptic_ops"] > 0
    md = (tmp_path / "run" / "loihi2" / "report.md").read_text()
    assert "## Does it fit (loihi2)" in md and "## What it costs (estimate" in md and "| energy (uJ) |" in md
    disagree = 1 - saved["agreement"]["prediction_float_vs_fixed"]
    assert (saved["inspect"] is not None) == (disagree > 0.01)
    assert ("neurodeploy inspect" in md) == (disagree > 0.01)
    # the evaluate report of the same run: the fit summary and, from the clean emulator row, the estimate
    from neurodeploy.cli import main

    rep = tmp_path / "rep"
    assert main(["evaluate", str(tmp_path / "run"), "--backends", "float,emulator", "--noise", "gaussian:0,0.2",
                 "--samples", "20", "--report", str(rep), "--quiet"]) == 0
    run = json.loads((rep / "robustness.json").read_text())["runs"][0]
    assert run["fit"]["fits"] and run["fit"]["cores"] == 2
    assert 0 < run["energy"]["energy_uj"][0] < run["energy"]["energy_uj"][1]
    clean = next(r for r in run["rows"] if r["backend"] == "emulator" and r["level"] == 0)
    assert run["energy"]["spikes"] == pytest.approx(clean["input_events_per_sample"]
                                                    + sum(clean["spikes_per_layer"]))
    rmd = (rep / "robustness.md").read_text()
    assert "Fit on `loihi2`: 2 cores" in rmd and "Energy per clean inference" in rmd
