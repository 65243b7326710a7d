"""The ``neurodeploy`` command line.

Every user-facing error (bad config, missing data, bad noise spec, unusable
run folder) is printed as one clear line and exits with status 2; no deep
traceback reaches the user.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

# Errors that are the user's to fix: printed as one line, exit status 2.
from .config import ConfigError
from .data import DataError
from .evaluate.robustness import NoiseSpecError
from .train.checkpoint import CheckpointError
from .train.loop import RunError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, CheckpointError, RunError, NoiseSpecError)


def _parse_set(items: Sequence[str]) -> dict:
    """``--set training.lr=0.05`` pairs; values parsed as YAML scalars."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=0.05")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import train

    overrides = _parse_set(args.set)
    if args.epochs is not None:
        overrides["training.epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.data_dir is not None:
        overrides["data.data_dir"] = str(args.data_dir)
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    result = train(cfg, out, resume=args.resume, force=args.force, progress=not args.quiet)
    last = result.metrics[-1] if result.metrics else {}
    acc = last.get("test_acc")
    print(f"run saved to {out}" + (f" (test accuracy {acc:.4f} after {last['epoch']} epochs)" if acc is not None else ""))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.robustness import evaluate_runs

    evaluate_runs(
        runs=[Path(r) for r in args.runs] + [Path(r) for r in (args.compare or [])],
        noise_specs=args.noise or [],
        repeats=args.repeats,
        seed=args.seed,
        samples=args.samples,
        report_dir=Path(args.report) if args.report else None,
        progress=not args.quiet,
    )
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS, load_dataset

    for name in DATASETS:
        try:
            d = load_dataset(name, data_dir=args.data_dir)
            print(f"{name:14s} {d.kind:8s} train {d.n_train:6d}  test {d.n_test:6d}  "
                  f"shape {tuple(d.input_shape)}  classes {d.n_classes}")
        except DataError as exc:
            print(f"{name:14s} unavailable: {str(exc).splitlines()[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurodeploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a config in models/")
    p.add_argument("--config", required=True, type=Path, help="model file, e.g. models/mnist5k-mlp-dlif.yaml")
    p.add_argument("--out", type=Path, help="run folder (default runs/<config name>)")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--seed", type=int, help="override the seed (data split, init, noise)")
    p.add_argument("--data-dir", type=Path, help="folder with local fashion-mnist / cifar10 files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set regularizer.mppd.rho=0.5")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar; one line per epoch")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="robustness of trained runs under input noise and attacks")
    p.add_argument("runs", nargs="+", help="run folders (runs/X)")
    p.add_argument("--compare", nargs="+", help="more run folders to compare side by side")
    p.add_argument("--noise", action="append", metavar="NAME:L1,L2,...",
                   help="noise and levels, e.g. gaussian:0,0.1,0.2 or pgd:0,8/255 (repeatable)")
    p.add_argument("--repeats", type=int, default=1, help="seeds per noise level")
    p.add_argument("--seed", type=int, default=0, help="base seed of the noise")
    p.add_argument("--samples", type=int, help="evaluate only the first N test samples")
    p.add_argument("--report", help="folder for JSON, Markdown and PNG results")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("datasets", help="list the data sets and whether they are available")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_datasets)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``neurodeploy`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"neurodeploy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neurodeploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
