"""Smoke test of benchmarks/method_study.py: every arm trains one epoch on a few hundred samples,
is deployed and evaluated in float and fixed point, and the study writes its tables; a second call
reuses every run and evaluation."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import method_study  # noqa: E402


def test_every_arm_runs_and_the_study_resumes(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    logs = []
    res = method_study.run_study(method_study.BUDGETS["smoke"], list(method_study.FAMILIES), runs, out,
                                 log=logs.append)
    for fam, (_, arms) in method_study.FAMILIES.items():
        assert set(res["families"][fam]) == {a.name for a in arms}
        for evals in res["families"][fam].values():
            ev = evals[0]
            views = {r["view"] for r in ev["rows"]}
            assert views == {"trained float", "deployable float", "fixed point"}
            assert {r["noise"] for r in ev["rows"] if r["view"] == "deployable float"} == {"gaussian"}
            assert ev["hardware"] and all(r["view"] == "fixed point" for r in ev["hardware"])
            # per-epoch diagnostics are in the run's metrics
            assert ev["metrics"] and "train_mppd" in ev["metrics"][-1]
    assert res["differences"] and all("difference" in d for d in res["differences"])
    summary = (out / "summary.md").read_text()
    assert "Differences between arms" in summary and "commit" in summary
    assert json.loads((out / "results.json").read_text())["budget"] == "smoke"
    # resumable: nothing is trained or evaluated again
    cached = {p: p.stat().st_mtime_ns for p in runs.rglob("eval.json")}
    logs.clear()
    method_study.run_study(method_study.BUDGETS["smoke"], list(method_study.FAMILIES), runs, out,
                           log=logs.append)
    assert all(p.stat().st_mtime_ns == t for p, t in cached.items())
    assert all("reusing the trained run" in line for line in logs if "train" in line and "[" not in line)


def test_welch_interval():
    d = method_study.welch([0.5, 0.52, 0.51], [0.6, 0.62, 0.61])
    assert d["difference"] > 0 and d["ci95"][0] > 0          # clearly separated
    d = method_study.welch([0.5, 0.6, 0.4], [0.52, 0.41, 0.62])
    assert d["ci95"][0] < 0 < d["ci95"][1]                    # not distinguishable
