"""Executors: the same sweep in this process, in a process pool and on a local Ray instance (2 workers)
gives the same JSON, byte for byte; a task that fails once is retried, one that always fails is reported
missing with its coordinates; the pipeline's Lava subset split into ranges equals one Lava run.

One Ray instance (2 CPUs) serves the whole module (``ray.init`` takes seconds)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers import require_module, small_quantized_model
from neurodeploy.backends import run_network
from neurodeploy.cli import main
from neurodeploy.data import load_dataset
from neurodeploy.errors import NeurodeployError
from neurodeploy.evaluate import robustness
from neurodeploy.evaluate.inputs import chip_inputs, encoding_generator
from neurodeploy.evaluate.lava_subset import emulator_slice, lava_range_tasks, merge_lava_ranges
from neurodeploy.evaluate.robustness import parse_noise_spec, sweep
from neurodeploy.executors import (ExecutorError, LocalExecutor, RayExecutor, SweepIncomplete, Task,
                                   make_executor, split_range)

_ORIGINAL_POINT_TASK = robustness._point_task
FLAKY_ENV = "NEURODEPLOY_TEST_FLAKY_DIR"
SPECS = ("gaussian:0,0.3", "weight-mismatch:0.2", "spike-drop:0.1")


def flaky_point_task(shared, spec_index, level, repeat):
    """The sweep's work unit, except: (gaussian 0.3, repeat 1) fails on its first try (a marker file
    says it was tried), (weight-mismatch, repeat 0) fails every time."""
    marker = Path(os.environ[FLAKY_ENV]) / f"tried-{spec_index}-{level}-{repeat}"
    if (spec_index, level, repeat) == (0, 0.3, 1) and not marker.exists():
        marker.touch()
        raise RuntimeError("injected failure (first try only)")
    if (spec_index, repeat) == (1, 0):
        raise RuntimeError("injected failure (every try)")
    return _ORIGINAL_POINT_TASK(shared, spec_index, level, repeat)


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    ray = require_module("ray", "Ray is the optional extra neurodeploy[ray] (the README's test command installs it)")
    from neurodeploy.executors import _worker_pythonpath

    flaky = tmp_path_factory.mktemp("flaky")
    old = os.environ.get(FLAKY_ENV)
    os.environ[FLAKY_ENV] = str(flaky)
    tests = str(Path(__file__).resolve().parent)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join([_worker_pythonpath(), tests]), FLAKY_ENV: str(flaky),
        "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore:`torch.jit.script` is deprecated:FutureWarning"}})
    yield flaky
    ray.shutdown()
    if old is None:
        os.environ.pop(FLAKY_ENV, None)
    else:
        os.environ[FLAKY_ENV] = old


@pytest.fixture(scope="module")
def small():
    model, quantized, _ = small_quantized_model("mlp", hidden=(12,))
    data = load_dataset("digits", seed=0)
    x, y = torch.as_tensor(data.x_test[:24]), torch.as_tensor(data.y_test[:24])
    return model, quantized, x, y


def _sweep(small, executor=None, **kw) -> list[dict]:
    model, quantized, x, y = small
    specs = [parse_noise_spec(s) for s in SPECS]
    return sweep(model, x, y, specs, 2, 0, ("float", "emulator", "lava"), quantized, lava_samples=5,
                 executor=executor, **kw)


def test_sweep_is_the_same_on_every_executor(small, ray_instance):
    here = _sweep(small)                                     # the default: this process, in order
    assert {r["backend"] for r in here} == {"float", "emulator", "lava"}
    assert len(here) == 3 * 2 * 4                            # 3 backends x 2 repeats x 4 (noise, level)
    assert all(r["emulator_identical_spikes"] == 1.0 for r in here if r["backend"] == "lava")
    # the points differ from each other, so equal JSON below is not a coincidence of constant rows
    assert len({r["spikes_per_sample"] for r in here if r["backend"] == "emulator"}) > 2
    text = json.dumps(here)
    assert json.dumps(_sweep(small, LocalExecutor(2))) == text         # two spawned processes
    assert json.dumps(_sweep(small, RayExecutor(2))) == text           # two Ray actors


def test_failed_tasks_are_retried_once_then_reported_missing(small, ray_instance, monkeypatch):
    clean = _sweep(small)
    monkeypatch.setattr(robustness, "_point_task", flaky_point_task)
    outs = {}
    for name, ex in (("local", LocalExecutor()), ("ray", RayExecutor(2))):
        for f in ray_instance.iterdir():
            f.unlink()
        missing: list = []
        rows = _sweep(small, ex, missing=missing, coords={"run": "tiny"})
        assert (ray_instance / "tried-0-0.3-1").exists()      # the flaky point failed once ...
        outs[name] = (rows, missing)
    rows, missing = outs["local"]
    assert json.dumps(outs["ray"]) == json.dumps(outs["local"])
    # ... and was retried: its rows are the clean sweep's
    point = [r for r in rows if (r["noise"], r["level"], r["repeat"]) == ("gaussian", 0.3, 1)]
    assert point and point == [r for r in clean if (r["noise"], r["level"], r["repeat"]) == ("gaussian", 0.3, 1)]
    # the point that always fails is missing, named by its coordinates, and nothing else is
    assert missing == [{"run": "tiny", "noise": "weight-mismatch", "level": 0.2, "repeat": 0,
                        "error": "RuntimeError: injected failure (every try)"}]
    assert not [r for r in rows if (r["noise"], r["repeat"]) == ("weight-mismatch", 0)]
    assert rows == [r for r in clean if (r["noise"], r["repeat"]) != ("weight-mismatch", 0)]
    # without a list to report into, the sweep refuses to return a half-empty result
    with pytest.raises(SweepIncomplete, match="weight-mismatch, level 0.2, repeat 0"):
        _sweep(small)


def test_lava_subset_in_ranges_equals_one_lava_run(small, ray_instance):
    model, quantized, x, y = small
    net = quantized.network
    inputs = chip_inputs(model, net, x, encoding_generator(0))
    emu = run_network(net, inputs.values)
    whole = run_network(net, inputs.values[:7], backend="lava")
    tasks = lava_range_tasks(inputs.values, emulator_slice(emu, 0, 7), 7, 2)
    assert [(t.params["start"], t.params["stop"]) for t in tasks] == [(0, 4), (4, 7)]
    with RayExecutor(2) as ex:
        done = ex.run(tasks, {"network": net})
    merged = merge_lava_ranges([r for _, r in done.ordered()[::-1]])    # any order
    assert np.array_equal(merged["predictions"], whole.predictions())
    assert np.array_equal(merged["spikes"], whole.spike_counts.sum(1))
    assert merged["same_output"].all() and merged["same_counts"].all() and merged["difference"] is None


def test_cli_evaluate_report_is_the_same_on_ray(tmp_path, ray_instance):
    from neurodeploy.config import load_config
    from neurodeploy.train import train

    run = tmp_path / "tiny"
    cfg = load_config("models/mnist5k-mlp-dlif.yaml", {"training.epochs": 1, "model.hidden": [16], "threads": 1})
    train(cfg, run, progress=False, data=load_dataset("mnist5k", seed=0).subset(256, 20), log=lambda s: None)
    reports = []
    for extra in ([], ["--executor", "ray", "--workers", "2"]):
        out = tmp_path / f"rep{len(reports)}"
        assert main(["evaluate", str(run), "--noise", "gaussian:0,0.2", "--noise", "dead-neuron:0.3",
                     "--backends", "float,emulator,lava", "--lava-samples", "3", "--samples", "20",
                     "--report", str(out), "--quiet", *extra]) == 0
        rep = json.loads((out / "robustness.json").read_text())
        for r in rep["runs"]:
            r.pop("seconds")                                  # wall time, the only field that may differ
        reports.append(rep)
    assert reports[0]["missing"] == [] and reports[0]["runs"][0]["rows"]
    assert json.dumps(reports[0]) == json.dumps(reports[1])


def _ok(shared, i):
    return {"i": i, "scale": shared["scale"] * i}


def _bad_input(shared, i):
    raise ExecutorError(f"bad input {i}")


def test_local_executor_orders_results_and_raises_user_errors_at_once():
    tasks = [Task(key=(i,), fn=_ok, params={"i": i}, coords={"i": i}) for i in (3, 1, 2)]
    done = LocalExecutor().run(tasks, {"scale": 2})
    assert done.ordered() == [((1,), {"i": 1, "scale": 2}), ((2,), {"i": 2, "scale": 4}), ((3,), {"i": 3, "scale": 6})]
    assert not done.failures and not done.missing()
    # an error the user can fix is not retried: it is raised as it is
    with pytest.raises(ExecutorError, match="bad input 0"):
        LocalExecutor().run([Task(key=(0,), fn=_bad_input, params={"i": 0})])
    assert split_range(7, 3) == [(0, 2), (2, 5), (5, 7)] and split_range(2, 5) == [(0, 1), (1, 2)]


def test_executor_options_are_checked(monkeypatch):
    with pytest.raises(ExecutorError, match="needs --executor ray"):
        make_executor("local", None, "auto")
    with pytest.raises(ExecutorError, match="worker count"):
        make_executor("local", 0)
    with pytest.raises(ExecutorError, match="expected one of local, ray"):
        make_executor("dask")
    # without Ray installed, asking for it is one line saying how to install it; local needs no Ray
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExecutorError) as err:
        make_executor("ray", 2)
    assert "neurodeploy[ray]" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, NeurodeployError)
    assert make_executor("local").workers == 1


def _without_timings(obj):
    """``obj`` without the wall-time fields (``seconds``, ``*_seconds``, ``samples_per_second``): all that
    may differ between two runs of the same job."""
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items()
                if not (k == "seconds" or k.endswith("_seconds") or k.endswith("per_second"))}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def test_cli_pipeline_report_is_the_same_on_ray(tmp_path, ray_instance):
    """The pipeline's Lava subset as ranges on 2 Ray workers (each compiles the network once) reports what
    the local run reports, field for field, the emulator identical to Lava on every sample."""
    text = Path("models/mnist5k-mlp-dlif.yaml").read_text().replace("hidden: [256]", "hidden: [16]")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(text.replace("name: mnist5k-mlp-dlif", "name: tiny"))
    run = tmp_path / "run"
    reports = []
    for extra in ([], ["--executor", "ray", "--workers", "2"]):
        assert main(["pipeline", "--config", str(cfg), "--out", str(run), "--epochs", "1", "--finetune", "0",
                     "--samples", "60", "--lava-samples", "9", "--quiet", *extra]) == 0
        reports.append(json.loads((run / "loihi2" / "report.json").read_text()))
    local, ray = reports
    assert local["lava"]["samples"] == 9 and local["emulator_vs_lava"]["identical"]
    assert local["lava"]["emulator_identical_output_spikes"] == 1.0
    for r in (local, ray):
        r.pop("training")                 # the second run found the first one's trained run and says so
    assert json.dumps(_without_timings(local)) == json.dumps(_without_timings(ray))


def test_sweep_executors_benchmark_quick(tmp_path, ray_instance):
    """benchmarks/sweep_executors.py --quick on a tiny run: both executors' reports equal, the ratio and the
    N-machine estimate written; the schedule model is the executor's greedy one."""
    from neurodeploy.config import load_config
    from neurodeploy.train import train

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import sweep_executors as bench

    assert bench.makespan([3, 1, 1, 1], 2) == 3 and bench.makespan([1, 1, 1, 3], 2) == 4
    assert bench.makespan([2, 2, 2], 1) == 6 and bench.makespan([], 4) == 0
    run = tmp_path / "tiny"
    cfg = load_config("models/mnist5k-mlp-dlif.yaml", {"training.epochs": 1, "model.hidden": [16], "threads": 1})
    train(cfg, run, progress=False, data=load_dataset("mnist5k", seed=0).subset(256, 20), log=lambda s: None)
    assert bench.main(["--quick", "--run", str(run), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "sweep_executors_quick.json").read_text())
    assert res["reports_equal"] and res["quick"]
    local, ray = res["measured"]["local"], res["measured"]["ray"]
    assert res["ratio_local_over_ray"] == pytest.approx(local["seconds"] / ray["seconds"])
    assert [p["tasks"] for p in local["phases"]] == [p["tasks"] for p in ray["phases"]] == [3, 3]
    assert all(len(p["task_seconds"]) == p["tasks"] for p in local["phases"] + ray["phases"])
    est = res["estimate_1_per_machine"]
    assert [e["machines"] for e in est] == list(bench.MACHINES)
    assert all(a["seconds"] >= b["seconds"] for a, b in zip(est, est[1:]))      # more machines never slower
    assert "local / Ray (2 workers)" in (tmp_path / "out" / "sweep_executors_quick.md").read_text()


def test_sweep_executors_benchmark_refuses_a_run_folder_without_a_checkpoint(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import sweep_executors as bench

    assert bench.main(["--quick", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--run" in err and "nothing" in err and "checkpoint" in err and "\n" not in err
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "out").exists()
