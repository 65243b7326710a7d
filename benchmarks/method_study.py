"""The method study: MS-MPPD as its authors ran it, carried through fixed point and hardware noise.

Arms (``ARMS``) override one shipped protocol config each (``models/paper-*.yaml``:
weight decay 5e-4 in every arm, the regularized layer deep in the net, a
linear readout); within a family every arm shares everything else:

* ``mlp`` (mnist5k) and ``srnn`` (vowels): DLIF rho = 0 vs 1 under Gaussian-noise
  training and under FGSM adversarial training; DLIF and LIF at rho = 0, 1, 2
  under Gaussian training (the paper: plain LIF collapses at rho = 2, DLIF does
  not); for the SRNN also DLIF + the recurrent bound penalty;
* ``conv`` (mnist5k, BatchNorm): DLIF rho = 0 vs 1 under FGSM adversarial
  training, with fewer epochs than the config (CPU cost; the report says so).

Every arm runs ``--seeds`` seeds. Each run is evaluated in eval mode on the
full test split: clean, FGSM, PGD-10 and PGD-20 at 8/255, 16/255 and 32/255,
APGD-CE (torchattacks) at 8/255 and Gaussian test noise, on the trained float
model (white box), the deployable float model and the fixed-point network
(emulator; attacks crafted on the deployable float model and transferred),
plus the hardware-noise sweep of ``hw_profiles/noisy-edge.yaml`` on the
fixed-point network. Attacks are crafted on the trained float model (white
box) and the same perturbed, encoded inputs go to the fixed-point network
(transfer); the deployable float model is shown clean. Differences between arms come with a 95% Welch interval
over seeds.

Resumable: finished runs and their evaluations (``eval.json``, keyed by the
checkpoint's digest and the settings) are reused, so the study can run in
pieces. ``--quick`` exercises every arm in a few minutes (1 seed, 2 epochs,
data subsets); ``--smoke`` (the test suite) one epoch on a few hundred
samples.

    PYTHONPATH=. $PY benchmarks/method_study.py [--quick | --smoke] [--families mlp,srnn,conv]

Writes ``benchmarks/results/method_study/`` (``--quick``: ``method_study_quick``):
``results.json`` (every number), ``summary.md`` and ``*.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, command_line, git_revision, machine_info, machine_line, now_iso  # noqa: E402

import torch  # noqa: E402

from neurodeploy.config import load_config  # noqa: E402
from neurodeploy.data import load_dataset  # noqa: E402
from neurodeploy.evaluate.deployment import file_digest, prepare_deployment  # noqa: E402
from neurodeploy.evaluate.pipeline import ensure_run  # noqa: E402
from neurodeploy.evaluate.robustness import sweep, summarize  # noqa: E402
from neurodeploy.noise.hardware import HardwareNoiseError  # noqa: E402
from neurodeploy.noise.specs import parse_noise_spec, resolve_noise_specs  # noqa: E402
from neurodeploy.train.checkpoint import CHECKPOINT_NAME  # noqa: E402
from neurodeploy.train.loop import METRICS_NAME, set_threads  # noqa: E402

PROFILE = "noisy-edge"     # loihi2's fixed point plus the noise levels it declares


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict


def _arm(mode: str, neuron: str, rho: float, **extra) -> Arm:
    name = f"{mode}-{neuron}-rho{rho:g}" + "".join(f"-{k.split('.')[-2]}" for k in extra)
    return Arm(name, {"training.mode": mode, "model.neuron.type": neuron, "regularizer.mppd.rho": rho, **extra})


_RHO_SWEEP = [_arm("gaussian", n, r) for n in ("dlif", "lif") for r in (0.0, 1.0, 2.0)]
_FGSM = [_arm("fgsm", "dlif", 0.0), _arm("fgsm", "dlif", 1.0)]

FAMILIES = {
    "mlp": ("models/paper-mnist5k-mlp-dlif.yaml", _RHO_SWEEP + _FGSM),
    "srnn": ("models/paper-vowels-srnn-dlif.yaml",
             _RHO_SWEEP + _FGSM + [_arm("gaussian", "dlif", 0.0, **{"regularizer.bound.weight": 0.1})]),
    "conv": ("models/paper-mnist5k-conv-dlif.yaml", _FGSM),
}

# (family, baseline arm, arm, what the difference tests)
COMPARISONS = [
    (fam, a, b, what)
    for fam in ("mlp", "srnn")
    for a, b, what in [
        ("gaussian-dlif-rho0", "gaussian-dlif-rho1", "MS-MPPD, Gaussian training (paper: +3.94 / +1.99)"),
        ("fgsm-dlif-rho0", "fgsm-dlif-rho1", "MS-MPPD, FGSM-AT (paper: PGD-10 29.06 -> 37.55)"),
        ("gaussian-dlif-rho0", "gaussian-dlif-rho2", "DLIF at rho 2 (paper: stable)"),
        ("gaussian-lif-rho0", "gaussian-lif-rho2", "LIF at rho 2 (paper: collapses)"),
        ("gaussian-lif-rho1", "gaussian-dlif-rho1", "DLIF vs LIF at rho 1"),
    ]
] + [("srnn", "gaussian-dlif-rho0", "gaussian-dlif-rho0-bound", "bound penalty, Gaussian training"),
     ("conv", "fgsm-dlif-rho0", "fgsm-dlif-rho1", "MS-MPPD, FGSM-AT (paper: PGD-10 29.06 -> 37.55)")]


@dataclass
class Budget:
    """How much of the study to run."""

    name: str
    seeds: int
    epochs: dict = field(default_factory=dict)       # family -> epochs (missing: the config's)
    train_samples: Optional[int] = None
    test_samples: Optional[int] = None
    eps: tuple = (8 / 255, 16 / 255, 32 / 255)
    attacks: tuple = ("fgsm", "pgd10", "pgd20")
    apgd: bool = True
    gaussian: tuple = (0.1, 0.2)
    hardware_levels: Optional[int] = None             # None: every level of the profile

    def key(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "name"}


BUDGETS = {
    # the conv net's 20 epochs of FGSM-AT take hours on 2 cores: 6 epochs
    # mlp: 30 of the config's 40 epochs, conv: 4 of 20 (FGSM-AT of the conv net costs ~1 min per epoch):
    # the full study must fit 2 hours on 2 cores
    "full": Budget("full", seeds=3, epochs={"mlp": 30, "conv": 4}),
    "quick": Budget("quick", seeds=1, epochs={"mlp": 2, "srnn": 4, "conv": 1}, train_samples=1000,
                    test_samples=200, eps=(8 / 255,), attacks=("fgsm", "pgd10"), gaussian=(0.2,),
                    hardware_levels=2),
    "smoke": Budget("smoke", seeds=1, epochs={"mlp": 1, "srnn": 1, "conv": 1}, train_samples=200,
                    test_samples=40, eps=(8 / 255,), attacks=("fgsm",), apgd=False, gaussian=(0.2,),
                    hardware_levels=1),
}


def _input_specs(b: Budget) -> list:
    specs = [parse_noise_spec(f"{a}:0," + ",".join(f"{e!r}" for e in b.eps)) for a in b.attacks]
    if b.apgd:
        specs.append(parse_noise_spec(f"apgd-ce:0,{8 / 255!r}"))
    specs.append(parse_noise_spec("gaussian:0," + ",".join(f"{s!r}" for s in b.gaussian)))
    return specs


def _hardware_specs(b: Budget) -> list:
    specs = [s for s in resolve_noise_specs(["all"], PROFILE) if s.kind in ("network", "step")]
    if b.hardware_levels is not None:     # the smallest levels but 0, for a quick pass
        specs = [type(s)(s.name, (0.0,) + tuple(lv for lv in s.levels if lv > 0)[-b.hardware_levels:])
                 for s in specs]
    return specs


def train_run(family: str, arm: Arm, seed: int, b: Budget, runs: Path, log) -> Path:
    config, _ = FAMILIES[family]
    over = {**arm.overrides, "seed": seed, "name": f"{family}-{arm.name}"}
    if family in b.epochs:
        over["training.epochs"] = b.epochs[family]
    cfg = load_config(ROOT / config, over)
    data = None
    if b.train_samples is not None or b.test_samples is not None:
        data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir).subset(
            b.train_samples, b.test_samples)
    run = runs / family / f"{arm.name}-seed{seed}"
    ensure_run(cfg, run, progress=False, log=log, data=data)
    return run


def evaluate_run(run: Path, seed: int, b: Budget, log) -> dict:
    """Float (trained, deployable) and fixed-point numbers of one run; cached in ``run/eval.json``."""
    key = json.loads(json.dumps({"checkpoint": file_digest(run / CHECKPOINT_NAME), "budget": b.key(),
                                 "version": 1}))   # as it reads back from the cache (tuples -> lists)
    cache = run / "eval.json"
    if cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("key") == key:
            return old
    dep = prepare_deployment(run, PROFILE, 0, progress=False, log=log)
    set_threads(dep.cfg.threads)
    data = load_dataset(dep.cfg.data.dataset, seed=dep.cfg.seed, data_dir=dep.cfg.data.data_dir)
    x = torch.as_tensor(data.x_test[:b.test_samples])
    y = torch.as_tensor(data.y_test[:b.test_samples])
    specs = _input_specs(b)
    t0 = time.perf_counter()
    # attacks are crafted once, on the trained model (white box), and the same perturbed inputs go to the
    # fixed-point network (transfer); crafting twice would double the study's cost
    rows = [{**r, "view": "trained float" if r["backend"] == "float" else "fixed point"}
            for r in sweep(dep.trained, x, y, specs, 1, seed, ("float", "emulator"), dep.quantized)]
    rows += [{**r, "view": "deployable float"} for r in sweep(dep.model, x, y, [parse_noise_spec("gaussian:0")],
                                                              1, seed, ("float",), dep.quantized)]
    hw, refused = [], []
    for spec in _hardware_specs(b):
        try:
            hw += [{**r, "view": "fixed point"} for r in sweep(dep.model, x, y, [spec], 1, seed, ("emulator",),
                                                               dep.quantized)]
        except HardwareNoiseError as exc:
            # a noise this network cannot carry exactly (e.g. a stuck conv neuron whose bias no exponent
            # reaches): recorded and reported as missing, never approximated
            refused.append({"noise": spec.name, "reason": str(exc)})
            log(f"{run}: {spec.name} refused: {exc}")
    result = {"key": key, "run": str(run), "seed": seed, "samples": len(x), "rows": rows, "hardware": hw,
              "hardware_refused": refused,
              "metrics": [json.loads(line) for line in (run / METRICS_NAME).read_text().splitlines()],
              "eval_seconds": time.perf_counter() - t0}
    cache.write_text(json.dumps(result))
    return result


# --------------------------------------------------------------------------- statistics


def welch(a: list[float], b: list[float]) -> dict:
    """Difference of means b - a with a 95% Welch interval (seeds as samples)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return {"difference": diff, "ci95": None, "n": [len(a), len(b)]}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"difference": diff, "ci95": [diff, diff], "n": [len(a), len(b)]}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    return {"difference": diff, "ci95": [diff - half, diff + half], "n": [len(a), len(b)]}


def conditions(evals: list[dict], hardware: bool = False) -> dict:
    """(view, noise, level) -> accuracy per seed, from the runs of one arm."""
    out: dict = {}
    for ev in evals:
        for r in ev["hardware" if hardware else "rows"]:
            out.setdefault((r["view"], r["noise"], float(r["level"])), []).append(r["accuracy"])
    return out


def _cond_name(noise: str, level: float) -> str:
    if level == 0:
        return "clean"
    return f"{noise} {level * 255:.0f}/255" if noise in ("fgsm", "pgd10", "pgd20", "apgd-ce") else \
        f"{noise} {level:g}"


def build_tables(results: dict) -> list[str]:
    lines = []
    for fam, arms in results["families"].items():
        lines += [f"## {fam} ({FAMILIES[fam][0]})", ""]
        conds = {arm: conditions(evs) for arm, evs in arms.items()}
        keys = sorted({k for c in conds.values() for k in c if k[1] != "gaussian" or k[2] != 0},
                      key=lambda k: (k[0] != "trained float", k[0] != "deployable float", k[2] != 0, k[1], k[2]))
        keys = [k for k in keys if not (k[2] == 0 and k[1] != "fgsm")]   # one clean row per view
        names = list(arms)
        lines += ["| view | condition | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        for k in keys:
            cells = []
            for arm in names:
                accs = conds[arm].get(k)
                cells.append("" if not accs else f"{100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f}")
            lines.append(f"| {k[0]} | {_cond_name(k[1], k[2])} | " + " | ".join(cells) + " |")
        lines.append("")
    refused = [(fam, arm, ev["seed"], r) for fam, arms in results["families"].items() for arm, evs in arms.items()
               for ev in evs for r in ev.get("hardware_refused", [])]
    if refused:
        lines += ["## Hardware noises a network could not carry (missing from the means above)", "",
                  "| family | arm | seed | noise | why |", "|---|---|---:|---|---|"]
        lines += [f"| {fam} | {arm} | {seed} | {r['noise']} | {r['reason']} |" for fam, arm, seed, r in refused]
        lines.append("")
    lines += ["## Differences between arms (points, 95% Welch interval over seeds)", "",
              "| family | comparison | view | condition | baseline | arm | difference [95% CI] |",
              "|---|---|---|---|---|---:|---:|"]
    for d in results["differences"]:
        ci = "" if d["ci95"] is None else f" [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
        lines.append(f"| {d['family']} | {d['what']} | {d['view']} | {d['condition']} | {d['baseline']} | "
                     f"{d['arm']} | {100 * d['difference']:+.1f}{ci} |")
    return lines


KEY_CONDITIONS = [("fgsm", 0.0), ("pgd10", 8 / 255), ("pgd20", 8 / 255), ("apgd-ce", 8 / 255), ("gaussian", 0.2)]


def differences(results: dict) -> list[dict]:
    out = []
    for fam, a, b, what in COMPARISONS:
        arms = results["families"].get(fam, {})
        if a not in arms or b not in arms:
            continue
        ca, cb = conditions(arms[a]), conditions(arms[b])
        for view in ("trained float", "fixed point"):
            for noise, level in KEY_CONDITIONS:
                k = (view, noise, float(level))
                if k in ca and k in cb:
                    out.append({"family": fam, "what": what, "baseline": a, "arm": b, "view": view,
                                "condition": _cond_name(noise, level), **welch(ca[k], cb[k])})
        ha, hb = conditions(arms[a], True), conditions(arms[b], True)
        for k in sorted(set(ha) & set(hb)):
            if k[2] > 0 and k[2] == max(lv for (_, n, lv) in ha if n == k[1]):   # each noise at its top level
                out.append({"family": fam, "what": what, "baseline": a, "arm": b, "view": "fixed point",
                            "condition": _cond_name(k[1], k[2]), **welch(ha[k], hb[k])})
    return out


# --------------------------------------------------------------------------- plots


def plot(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for fam, arms in results["families"].items():
        names = list(arms)
        conds = {arm: conditions(evs) for arm, evs in arms.items()}
        shown = [(n, lv) for n, lv in KEY_CONDITIONS if any(("trained float", n, float(lv)) in c
                                                            for c in conds.values())]
        fig, axes = plt.subplots(1, len(shown) + 2, figsize=(3.6 * (len(shown) + 2), 4), squeeze=False)
        for ax, (noise, level) in zip(axes[0], shown):
            for j, view in enumerate(("trained float", "fixed point")):
                vals = [conds[a].get((view, noise, float(level)), [np.nan]) for a in names]
                ax.bar(np.arange(len(names)) + 0.4 * j - 0.2, [100 * np.mean(v) for v in vals], 0.4,
                       yerr=[100 * np.std(v) for v in vals], capsize=2, label=view)
            ax.set_title(_cond_name(noise, level), fontsize=9)
            ax.set_xticks(np.arange(len(names)))
            ax.set_xticklabels(names, rotation=70, fontsize=7)
            ax.set_ylabel("accuracy (%), mean ± std over seeds")
            ax.set_ylim(0, 100)
        axes[0][0].legend(fontsize=7)
        ax = axes[0][-2]
        # does p absorb the penalty? V before p (what is penalised) and after p, over epochs
        for arm in names:
            ms = arms[arm][0]["metrics"]
            if ms and "train_mppd" in ms[-1]:
                line, = ax.plot([m["epoch"] for m in ms], [m["train_mppd"] for m in ms], label=f"{arm} V")
                if "train_mppd_after_gain" in ms[-1]:
                    ax.plot([m["epoch"] for m in ms], [m["train_mppd_after_gain"] for m in ms], ":",
                            color=line.get_color())
        ax.set_yscale("log")
        ax.set_title("MS-MPPD V before p (solid) and after p (dotted), seed 0", fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=5)
        ax = axes[0][-1]
        # the regularized layer's mean gain over epochs
        for arm in names:
            ms = arms[arm][0]["metrics"]
            key = _gain_key(ms)
            if key:
                ax.plot([m["epoch"] for m in ms], [m[key] for m in ms], label=arm)
        ax.set_title("mean DLIF gain p of the last spiking layer (seed 0)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6)
        fig.suptitle(f"method study: {fam}")
        fig.tight_layout()
        path = out / f"{fam}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def _gain_key(metrics: list[dict]) -> Optional[str]:
    keys = sorted(k for k in (metrics[-1] if metrics else {}) if "gain" in k and "mean" in k)
    return keys[-1] if keys else None


# --------------------------------------------------------------------------- main


def arm_task(shared: dict, family: str, arm: int, seed: int) -> dict:
    """Work unit of the study: train (or reuse) one arm's run of one seed and evaluate it (JSON-able)."""
    log = shared.get("log") or print
    run = train_run(family, FAMILIES[family][1][arm], seed, shared["budget"], shared["runs"], log)
    return evaluate_run(run, seed, shared["budget"], log)


def run_study(budget: Budget, families: list[str], runs: Path, out: Path, log=print, executor=None) -> dict:
    """Train and evaluate every arm of ``families`` under ``budget``; write the results into ``out``.

    Every (family, arm, seed) is a task (:func:`arm_task`) of ``executor``
    (:mod:`neurodeploy.executors`; default: this process, in order); a task that
    fails twice is listed under ``missing`` and left out of the tables.
    """
    from neurodeploy.executors import LocalExecutor, Task

    t0 = time.perf_counter()
    results = {"budget": budget.name, "settings": budget.key(), "profile": PROFILE, "families": {}}
    tasks = [Task(key=(list(FAMILIES).index(fam), i, seed), fn=arm_task,
                  params={"family": fam, "arm": i, "seed": seed},
                  coords={"family": fam, "arm": arm.name, "seed": seed})
             for fam in families for i, arm in enumerate(FAMILIES[fam][1]) for seed in range(budget.seeds)]
    executor = executor if executor is not None else LocalExecutor()
    shared = {"budget": budget, "runs": runs, "log": log if executor.in_process else None}
    with executor:
        done = executor.run(tasks, shared, description="arms", log=log)
    results["missing"] = done.missing()
    for fam in families:
        results["families"][fam] = {}
        for i, arm in enumerate(FAMILIES[fam][1]):
            evals = [done.results[(list(FAMILIES).index(fam), i, seed)] for seed in range(budget.seeds)
                     if (list(FAMILIES).index(fam), i, seed) in done.results]
            for ev in evals:
                log(f"{fam} {arm.name} seed {ev['seed']}: clean {100 * ev['rows'][0]['accuracy']:.1f}%")
            if evals:
                results["families"][fam][arm.name] = evals
    old = out / "results.json"
    if old.is_file():
        # families run in an earlier call (the study can run in pieces) stay in the results
        prev = json.loads(old.read_text())
        if prev.get("budget") == budget.name and prev.get("settings") == json.loads(json.dumps(budget.key())):
            for fam, arms in prev["families"].items():
                results["families"].setdefault(fam, arms)
    results["families"] = {f: results["families"][f] for f in FAMILIES if f in results["families"]}
    results["differences"] = differences(results)
    results["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    results["plots"] = plot(results, out)
    lines = ["# Method study: MS-MPPD as the reference runs it, float and fixed point", "",
             f"Budget `{budget.name}` ({budget.seeds} seed(s) per arm), profile `{PROFILE}` (loihi2 fixed point); "
             f"accuracy in %, mean ± std over seeds. Views: the trained float model (white-box attacks), the "
             f"deployable float model (DLIF gain folded; clean only) and the fixed-point network on the emulator "
             f"(the attacks crafted on the trained float model, transferred; identical encoded inputs).", "",
             f"- command: `{command_line()}`", f"- commit: {git_revision()}",
             f"- machine: {machine_line(machine_info())}", f"- date: {now_iso()}; {results['seconds']:.0f} s", ""]
    lines += [f"- MISSING (failed twice): {', '.join(f'{k} {v}' for k, v in m.items())}"
              for m in results["missing"]]
    lines += build_tables(results)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results))
    log(f"written: {out}/summary.md")
    return results


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="every arm, 1 seed, a few epochs on subsets")
    group.add_argument("--smoke", action="store_true", help="every arm for one epoch on a few hundred samples")
    parser.add_argument("--families", default="mlp,srnn,conv")
    parser.add_argument("--runs", type=Path, help="run folders (default benchmarks/runs/method_study[_BUDGET])")
    parser.add_argument("--out", type=Path, help="results (default benchmarks/results/method_study[_BUDGET])")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where the arms train: this machine (default) or a Ray cluster")
    parser.add_argument("--workers", type=int, help="local: processes (default 1, this one); ray: actors")
    parser.add_argument("--ray-address", help="a running Ray cluster (default with --executor ray: a local one)")
    args = parser.parse_args(argv)
    budget = BUDGETS["quick" if args.quick else "smoke" if args.smoke else "full"]
    suffix = "" if budget.name == "full" else f"_{budget.name}"
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"--families: unknown {unknown} (known: {', '.join(FAMILIES)})")
    from neurodeploy.errors import NeurodeployError
    from neurodeploy.executors import make_executor

    try:
        executor = make_executor(args.executor, args.workers, args.ray_address)
    except NeurodeployError as exc:
        parser.error(str(exc))
    run_study(budget, families, args.runs or ROOT / "benchmarks" / "runs" / f"method_study{suffix}",
              args.out or RESULTS / f"method_study{suffix}", executor=executor)


if __name__ == "__main__":
    main()
