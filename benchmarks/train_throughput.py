"""Training throughput (samples/s): clean training vs. Gaussian-noise training with MS-MPPD.

Both modes are built from one model file (default ``models/mnist5k-mlp-dlif.yaml``):

* ``clean``: the file with ``training.mode=clean`` and ``regularizer.mppd.rho=0``
  (one forward and one backward pass per step);
* ``ms-mppd``: the file as shipped (Gaussian-noise training, MS-MPPD; two
  forward passes, a perturbation penalty and one backward pass per step).

Model, optimizer and scheduler are built as ``neurodeploy.train.loop.train``
builds them, and one step is the body of its inner loop (perturbation,
``training_loss``, finiteness check, backward, optional clipping, optimizer,
SNN-RAT and scheduler steps); per-epoch evaluation and checkpointing are not
timed. Both modes run in the same process with the same thread count and the
same batches, interleaved: after a warm-up, each round times ``--steps``
steps of each mode, the order alternating between rounds. The speed ratio is
computed per round, so load from other processes on the machine mostly
cancels; the report gives the median and the spread of those per-round
ratios.

Run from the repository root::

    PYTHONPATH=. $PY benchmarks/train_throughput.py [--threads 2] [--rounds 6] [--steps 25]

Writes ``benchmarks/results/train_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

from _common import RESULTS, ROOT, CpuMonitor, command_line, machine_info, machine_line, now_iso

import torch  # noqa: E402

from neurodeploy.config import RunConfig, load_config  # noqa: E402
from neurodeploy.data import load_dataset  # noqa: E402
from neurodeploy.models import build_model  # noqa: E402
from neurodeploy.train import loop  # noqa: E402
from neurodeploy.train.regularizers import snn_rat_step  # noqa: E402

MODES = {
    "clean": {"training.mode": "clean", "regularizer.mppd.rho": 0},
    "ms-mppd": {},
}
LABELS = {"clean": "clean", "ms-mppd": "Gaussian noise + MS-MPPD"}


class Trainer:
    """One mode's model, optimizer and scheduler, built as ``loop.train`` builds them."""

    def __init__(self, cfg: RunConfig, data, batch_size: int) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # parameter initialisation, as in loop.train
        self.model = build_model(cfg, data.input_shape, data.n_classes)
        steps_per_epoch = math.ceil(data.n_train / batch_size)
        self.opt = loop._optimizer(self.model, cfg)
        self.sched = loop._scheduler(self.opt, cfg, steps_per_epoch)
        self.model.train()
        self.g = loop.epoch_generator(cfg.seed, 0)  # this mode's random stream (noise, shifts)
        loop._set_encoder_generator(self.model, self.g)
        self.shift = getattr(cfg.training, "augment_shift", 0)

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """One training step: the body of the inner loop of ``loop.train``."""
        cfg, g = self.cfg, self.g
        if self.shift and hasattr(loop, "random_shift"):
            xb = loop.random_shift(xb, self.shift, g)
        loss, _terms = loop.training_loss(self.model, cfg, xb, yb, g)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{cfg.name}: loss became {float(loss)}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.training.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.training.grad_clip)
        self.opt.step()
        snn_rat_step(self.model, cfg.regularizer.rat_beta)
        self.sched.step()


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    """Endless stream of full shuffled batches (a new permutation per pass)."""
    epoch = 0
    while True:
        perm = torch.randperm(len(x), generator=loop.epoch_generator(seed, 1000 + epoch))
        for b in range(len(x) // batch_size):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            yield x[idx], y[idx]
        epoch += 1


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def timed(trainer: Trainer, block: list) -> float:
    t0 = time.perf_counter()
    for xb, yb in block:
        trainer.step(xb, yb)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "models" / "mnist5k-mlp-dlif.yaml")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: the config's `threads`)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds (even: balanced order)")
    ap.add_argument("--steps", type=int, default=25, help="timed training steps per mode per round")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per mode before the rounds")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for train_throughput.{json,md}")
    args = ap.parse_args()

    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    cfgs = {}
    for mode, overrides in MODES.items():
        ov = {"training.batch_size": args.batch_size, **overrides}
        if args.threads is not None:
            ov["threads"] = args.threads
        cfgs[mode] = load_config(args.config, ov)
    threads = cfgs["ms-mppd"].threads
    loop.set_threads(threads)
    base = cfgs["ms-mppd"]
    data = load_dataset(base.data.dataset, seed=base.seed, data_dir=base.data.data_dir)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    trainers = {mode: Trainer(cfg, data, args.batch_size) for mode, cfg in cfgs.items()}
    stream = batches(x, y, args.batch_size, base.seed)
    started = now_iso()
    machine_before = machine_info()

    seconds = {mode: [] for mode in MODES}
    order_log = []
    with CpuMonitor() as cpu, Progress(console=console, transient=True) as bar:
        task = bar.add_task("warm-up", total=args.rounds + 1)
        warm = [next(stream) for _ in range(args.warmup)]
        for trainer in trainers.values():
            timed(trainer, warm)
        bar.advance(task)
        for r in range(args.rounds):
            bar.update(task, description=f"round {r + 1}/{args.rounds}")
            block = [next(stream) for _ in range(args.steps)]  # same batches for both modes
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            order_log.append(order)
            for mode in order:
                seconds[mode].append(timed(trainers[mode], block))
            bar.advance(task)

    samples = args.steps * args.batch_size
    rates = {mode: [samples / s for s in secs] for mode, secs in seconds.items()}
    ratios = [m / c for m, c in zip(rates["ms-mppd"], rates["clean"])]
    med = {mode: statistics.median(v) for mode, v in rates.items()}
    ratio = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
             "per_round": ratios}
    machine = machine_info()
    machine["load_average_at_start"] = machine_before["load_average_1_5_15"]
    machine["cpu_use_during_timing"] = cpu.result
    result = {
        "benchmark": "train_throughput",
        "command": command_line(),
        "date": started,
        "machine": machine,
        "config": rel(args.config),
        "modes": {mode: {"label": LABELS[mode], "overrides": MODES[mode], "training_mode": cfgs[mode].training.mode,
                         "mppd_rho": cfgs[mode].regularizer.mppd.rho} for mode in MODES},
        "threads": threads, "batch_size": args.batch_size, "rounds": args.rounds,
        "steps_per_round": args.steps, "warmup_steps": args.warmup, "order": order_log,
        "seconds_per_round": seconds,
        "samples_per_s_per_round": rates,
        "samples_per_s_median": med,
        "ratio_ms_mppd_over_clean": ratio,
    }

    def fmt_rates(v):
        return f"{min(v):.0f}–{max(v):.0f}"

    table = [
        "| mode | median samples/s | per-round range | median ms/step |",
        "|---|---:|---:|---:|",
    ]
    for mode in MODES:
        ms = 1000 * statistics.median(seconds[mode]) / args.steps
        table.append(f"| {LABELS[mode]} | {med[mode]:.0f} | {fmt_rates(rates[mode])} | {ms:.1f} |")
    table.append(f"| **ratio MS-MPPD / clean** | **{ratio['median']:.3f}** | "
                 f"{ratio['min']:.3f}–{ratio['max']:.3f} | (per-round ratios) |")
    md = "\n".join([
        "# Training throughput: clean vs. Gaussian-noise + MS-MPPD",
        "",
        f"Model file `{result['config']}`; batch {args.batch_size}; torch threads {threads}; "
        f"{args.warmup} warm-up steps per mode, then {args.rounds} interleaved rounds of "
        f"{args.steps} steps per mode (order alternating). Ratios are per round, then the median.",
        "",
        *table,
        "",
        f"Per-round ratios: {', '.join(f'{r:.3f}' for r in ratios)}.",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {machine_line(machine)} (load average at start {machine['load_average_at_start']})",
        f"- CPU use during the timing (cores, from /proc/stat): this process {cpu.result['own_cores']}, "
        f"other processes {cpu.result['others_busy_cores']}",
        f"- date: {started}",
        "",
        *([f"**Warning:** this process got {cpu.result['own_cores']} cores for {threads} torch threads while other "
           f"processes used {cpu.result['others_busy_cores']} cores: the timings are bound by CPU contention, "
           "not by the training code."] if cpu.result["own_cores"] < 0.8 * min(threads, os.cpu_count() or 1) else []),
        "",
        "Other processes may share the CPU: absolute samples/s depend on the load; the ratio, measured "
        "interleaved in one process, is the number to compare. With more torch threads than free cores "
        "(e.g. 2 threads on 2 cores while another job runs), torch's OpenMP threads spin-wait for each "
        "other and training can be an order of magnitude slower; `OMP_WAIT_POLICY=PASSIVE` or "
        "`--threads 1` avoids that.",
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_throughput.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "train_throughput.md").write_text(md)
    print(md)
    console.print(f"written: {args.out / 'train_throughput.json'}, {args.out / 'train_throughput.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
