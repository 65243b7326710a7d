"""The robustness study: LIF baseline vs DLIF + MS-MPPD, float vs fixed point, under every noise.

Trains (or reuses) the mnist5k MLP pair and the vowels SRNN pair in
``benchmarks/runs/``, then sweeps every noise the ``noisy-edge`` profile
declares (5 levels each, ``--repeats`` chip instances / noise seeds) on the
float model and the fixed-point emulator (full test split), and writes
``benchmarks/results/robustness_study/<dataset>/robustness.{json,md,png}``
plus ``summary.md`` (the table the README shows).

    PYTHONPATH=. $PY benchmarks/robustness_study.py [--repeats 3] [--lava-samples 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import RESULTS, ROOT, command_line, machine_info, machine_line, now_iso

from neurodeploy.config import load_config  # noqa: E402
from neurodeploy.evaluate.pipeline import ensure_run  # noqa: E402
from neurodeploy.evaluate.robustness import evaluate_runs  # noqa: E402

PAIRS = {
    "mnist5k": ("models/mnist5k-mlp-lif.yaml", "models/mnist5k-mlp-dlif.yaml"),
    "vowels": ("models/vowels-srnn-lif.yaml", "models/vowels-srnn-dlif.yaml"),
}


def _level_table(results: dict, backend: str) -> list[str]:
    """Rows: noise x level; columns: LIF, DLIF+MS-MPPD, difference (accuracy %, mean over repeats)."""
    lif, dlif = results["runs"][0], results["runs"][1]
    key = {(s["noise"], s["level"]): s for s in dlif["summary"] if s["backend"] == backend}
    rows = []
    for s in lif["summary"]:
        if s["backend"] != backend or s["level"] == 0:
            continue
        d = key[(s["noise"], s["level"])]
        diff = 100 * (d["accuracy_mean"] - s["accuracy_mean"])
        rows.append(f"| {s['noise']} | {s['level']:.4g} | {100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f}"
                    f" | {100 * d['accuracy_mean']:.1f} ± {100 * d['accuracy_std']:.1f} | {diff:+.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lava-samples", type=int, default=0, help="also run Lava on this many samples per level")
    parser.add_argument("--datasets", default="mnist5k,vowels")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    out = RESULTS / "robustness_study"
    out.mkdir(parents=True, exist_ok=True)
    backends = ("float", "emulator") + (("lava",) if args.lava_samples else ())
    t_all = time.perf_counter()
    summary = ["# Robustness study: LIF vs DLIF + MS-MPPD, float vs fixed point", "",
               f"Every noise of `hw_profiles/noisy-edge.yaml` at its 5 levels, {args.repeats} repeats "
               f"(noise seeds / simulated chip instances), full test splits; fixed point = the emulator "
               f"(bit-exact with Lava) running the post-training-quantized noisy-edge network; float = the "
               f"deployable float model it was quantized from (DLIF gain folded), on the same encoded inputs. "
               f"Accuracy in %, mean ± std over repeats; difference = DLIF+MS-MPPD − LIF.", ""]
    for dataset in args.datasets.split(","):
        lif_cfg, dlif_cfg = PAIRS[dataset]
        runs = []
        for cfg in (lif_cfg, dlif_cfg):
            run = ROOT / "benchmarks" / "runs" / Path(cfg).stem
            ensure_run(load_config(ROOT / cfg), run, progress=not args.quiet)
            runs.append(run)
        t0 = time.perf_counter()
        results = evaluate_runs(runs, ["all"], repeats=args.repeats, seed=0, report_dir=out / dataset,
                                progress=not args.quiet, backends=backends, profile="noisy-edge",
                                lava_samples=args.lava_samples)
        seconds = time.perf_counter() - t0
        clean = {r["name"]: next(s for s in r["summary"] if s["backend"] == "emulator" and s["level"] == 0)
                 for r in results["runs"]}
        summary += [f"## {dataset}", "",
                    "Clean accuracy (float / fixed point): " + "; ".join(
                        f"{r['name']}: {100 * next(s for s in r['summary'] if s['backend'] == 'float' and s['level'] == 0)['accuracy_mean']:.1f}"
                        f" / {100 * clean[r['name']]['accuracy_mean']:.1f}" for r in results["runs"])
                    + f"; sweep time {seconds:.0f} s for both models.", "",
                    "Fixed point (emulator):", "",
                    "| noise | level | LIF | DLIF+MS-MPPD | difference |", "|---|---:|---:|---:|---:|",
                    *_level_table(results, "emulator"), "",
                    f"Plot: `{dataset}/robustness.png`; float numbers and activity in `{dataset}/robustness.md`.", ""]
    summary += [f"- command: `{command_line()}`", f"- machine: {machine_line(machine_info())}", f"- date: {now_iso()}; "
                f"total {time.perf_counter() - t_all:.0f} s"]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    (out / "summary.json").write_text(json.dumps({"repeats": args.repeats, "date": now_iso()}))
    print(f"written: {out}/summary.md")


if __name__ == "__main__":
    main()
