"""The ``neurodeploy`` command line.

Every user-facing error (bad config, missing data, bad noise spec, unusable
run folder) is printed as one clear line and exits with status 2; no deep
traceback reaches the user. An emulator/Lava disagreement (a bug of ours,
found by ``pipeline`` and ``evaluate``) exits with status 3 after the report
is written.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from .config import ConfigError
from .errors import NeurodeployError


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
    from .evaluate.robustness import evaluate_runs, parse_backends

    evaluate_runs(
        runs=[Path(r) for r in args.runs] + [Path(r) for r in (args.compare or [])],
        noise_specs=args.noise or [],
        repeats=args.repeats,
        seed=args.seed,
        samples=args.samples,
        report_dir=Path(args.report) if args.report else None,
        progress=not args.quiet,
        backends=parse_backends(args.backends),
        profile=args.profile,
        lava_samples=args.lava_samples,
    )
    return 0


def _quantize_run(run: Path, profile: str, finetune: int = 0, progress: bool = True):
    from .evaluate.deployment import prepare_deployment
    from .quant.report import print_report, write_report

    dep = prepare_deployment(run, profile, finetune, progress=progress)
    write_report(dep.quantized, dep.folder)
    if progress:
        print_report(dep.quantized)
    return dep.cfg, dep.model, dep.checkpoint, dep.quantized, dep.folder


def _write_netx(network, path: Path) -> None:
    """Write netx HDF5; layers netx cannot hold exactly are rescaled for lava-dl (noted)."""
    import warnings

    from .io import NetxInexactWarning, write_netx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NetxInexactWarning)
        write_netx(network, path, exact=False)
    for w in caught:
        if issubclass(w.category, NetxInexactWarning):
            print(f"note: {w.message}")


def _cmd_quantize(args: argparse.Namespace) -> int:

    _, _, _, result, out = _quantize_run(Path(args.run), args.profile, args.finetune, not args.quiet)
    path = Path(args.out) if args.out else out / "network.net"
    _write_netx(result.network, path)
    print(f"quantized network written to {path}; report in {out}/quantization.{{json,md}}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .io import export_nir, export_onnx, read_netx
    from .train import load_run

    run = Path(args.run)
    if args.format == "hdf5":
        from .quant import load_profile

        existing = run / load_profile(args.profile).name / "network.net"
        if existing.is_file():
            network = read_netx(existing)
        else:
            print(f"no quantized network in {existing.parent}; quantizing for {args.profile} first")
            network = _quantize_run(run, args.profile, progress=not args.quiet)[3].network
        path = Path(args.out) if args.out else run / "network.net"
        _write_netx(network, path)
    else:
        cfg, model, ckpt = load_run(run)
        shape = tuple(ckpt["input_shape"])
        if args.format == "nir":
            path = Path(args.out) if args.out else run / "model.nir"
            export_nir(model, path, input_shape=shape, time_steps=cfg.data.time_steps or shape[0])
        else:
            path = Path(args.out) if args.out else run / "model_step.onnx"
            export_onnx(model, path)
    print(f"{args.format} written to {path}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from .backends import BackendError, run_network
    from .io import read_netx

    network = read_netx(args.network)
    labels = None
    if args.input is not None:
        try:
            inputs = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BackendError(f"{args.input}: not a readable .npy array ({exc})") from None
        if inputs.ndim < 2:
            raise BackendError(f"{args.input}: shape {inputs.shape}, expected (samples, steps, "
                               f"{', '.join(map(str, network.input_shape))})")
        network.time_steps = int(inputs.shape[1])  # the input decides how many steps to feed
    elif args.data is not None:
        from .data import load_dataset

        data = load_dataset(args.data, seed=args.seed, data_dir=args.data_dir)
        x = data.x_test[:args.samples]
        labels = data.y_test[:args.samples]
        if args.steps is not None:
            network.time_steps = args.steps
        enc = network.input_encoding.encode(x)
        inputs = enc if data.kind == "sequence" else np.repeat(enc[:, None], network.time_steps, axis=1)
        inputs = inputs.reshape(len(x), inputs.shape[1], *network.input_shape)
    else:
        raise BackendError("give --input SPIKES.npy or --data NAME")
    result = run_network(network, inputs, backend=args.backend, progress=not args.quiet)
    out = {"output_spikes": result.output_spikes, "spike_counts": result.spike_counts,
           "predictions": result.predictions(), "latency": np.int64(result.latency),
           "time_steps": np.int64(result.time_steps)}
    if labels is not None:
        out["labels"] = labels
        print(f"accuracy {float(np.mean(result.predictions() == labels)):.4f} on {len(labels)} samples")
    from .fileio import atomic_path

    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **out)
    print(f"{args.backend}: {len(inputs)} samples -> {args.out}")
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from .evaluate.pipeline import run_pipeline

    report = run_pipeline(Path(args.config), run_dir=Path(args.out) if args.out else None, profile=args.profile,
                          lava_samples=args.lava_samples, test_samples=args.samples, epochs=args.epochs,
                          seed=args.seed, finetune=args.finetune, force=args.force, progress=not args.quiet)
    t, f, q = report["trained_float"], report["float"], report["fixed_point"]
    print(f"trained float {100 * t['accuracy']:.2f}%, deployable float {100 * f['accuracy']:.2f}%, fixed point "
          f"{100 * q['accuracy']:.2f}% on {report['test_samples']} samples "
          f"(drop float -> fixed point {100 * report['accuracy_drop']:.2f} points)")
    if "lava" in report:
        lv = report["lava"]
        print(f"Lava on the first {lv['samples']} samples: {100 * lv['accuracy']:.2f}% (fixed point on the same "
              f"samples {100 * lv['emulator_accuracy_on_subset']:.2f}%), identical spikes to the emulator in "
              f"every layer")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS, DataError, load_dataset

    for name in DATASETS:
        try:
            d = load_dataset(name, data_dir=args.data_dir)
            print(f"{name:14s} {d.kind:8s} train {d.n_train:6d}  test {d.n_test:6d}  "
                  f"shape {tuple(d.input_shape)}  classes {d.n_classes}")
        except DataError as exc:
            print(f"{name:14s} unavailable: {str(exc).splitlines()[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurodeploy",
        description="Train robust spiking neural networks (Norse) and deploy them to Loihi-class fixed point "
                    "(quantize, export netx HDF5 / NIR / ONNX, simulate on Lava or the bit-exact emulator).")
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

    p = sub.add_parser("evaluate", help="robustness of trained runs under input noise, attacks and hardware noise")
    p.add_argument("runs", nargs="+", help="run folders (runs/X)")
    p.add_argument("--compare", nargs="+", help="more run folders to compare side by side")
    p.add_argument("--noise", action="append", metavar="NAME:L1,L2,...",
                   help="noise and levels, e.g. gaussian:0,0.1,0.2 or pgd:0,8/255 (repeatable)")
    p.add_argument("--repeats", type=int, default=1, help="seeds per noise level")
    p.add_argument("--seed", type=int, default=0, help="base seed of the noise")
    p.add_argument("--samples", type=int, help="evaluate only the first N test samples")
    p.add_argument("--report", help="folder for JSON, Markdown and PNG results")
    p.add_argument("--backends", default="float",
                   help="comma-separated: float (torch), emulator (fixed point, all samples), lava (subset)")
    p.add_argument("--profile", default="loihi2", help="hardware profile of the fixed-point network")
    p.add_argument("--lava-samples", type=int, default=100, help="samples per level on Lava")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("quantize", help="quantize a trained run to fixed point for a hardware profile")
    p.add_argument("run", help="run folder (runs/X)")
    p.add_argument("--profile", default="loihi2", help="profile name in hw_profiles/ or a profile file")
    p.add_argument("--out", help="netx HDF5 file to write (default RUN/<profile>/network.net)")
    p.add_argument("--finetune", type=int, default=0, metavar="N",
                   help="quantization-aware fine-tuning epochs (straight-through rounding) before quantizing")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("export", help="export a run as netx HDF5 (fixed point), NIR or ONNX (float)")
    p.add_argument("run", help="run folder (runs/X)")
    p.add_argument("--format", required=True, choices=("hdf5", "nir", "onnx"))
    p.add_argument("--out", help="output file")
    p.add_argument("--profile", default="loihi2", help="profile for hdf5 when the run is not quantized yet")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("simulate", help="run a netx HDF5 network on Lava or the emulator")
    p.add_argument("network", help="netx HDF5 network (.net/.h5)")
    p.add_argument("--backend", choices=("lava", "emulator"), default="emulator")
    p.add_argument("--input", help="(samples, steps, *input_shape) integer .npy: spikes or graded values")
    p.add_argument("--data", help="encode this data set's test split instead of --input")
    p.add_argument("--samples", type=int, help="first N test samples with --data")
    p.add_argument("--steps", type=int, help="input steps per sample with --data (default: the network's T)")
    p.add_argument("--seed", type=int, default=0, help="data split seed with --data")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("pipeline", help="the end-to-end job: train, quantize, export, compare float vs fixed point")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--profile", default="loihi2")
    p.add_argument("--lava-samples", type=int, default=200, help="test samples to run on Lava (0: skip Lava)")
    p.add_argument("--samples", type=int, help="limit the test split (default: all)")
    p.add_argument("--finetune", type=int, default=2, metavar="N",
                   help="quantization-aware fine-tuning epochs before quantizing (0: post-training only)")
    p.add_argument("--epochs", type=int, help="override training.epochs (a larger count extends a finished run)")
    p.add_argument("--seed", type=int, help="override the seed (data split, init, noise, spike encoding)")
    p.add_argument("--force", action="store_true",
                   help="retrain when the run folder holds a run of another config (default: refuse)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("datasets", help="list the data sets and whether they are available")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_datasets)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _process_setup() -> None:
    """Process-wide settings that belong to the command, not to ``import neurodeploy``."""
    import os
    import warnings

    # Idle OpenMP threads otherwise spin; on a small shared machine (2 cores) a
    # spinning second thread made training up to ~20x slower whenever another
    # process ran. Must be set before torch starts OpenMP; respects a user's value.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Norse 1.1.0 calls torch.jit.script at import time, which current torch flags
    # as deprecated on every run; the warning is Norse's, not the user's to act on.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``neurodeploy`` console script."""
    _process_setup()
    from .evaluate.agreement import BackendDisagreement

    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a job scheduler) takes the same clean path as Ctrl-C
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except NeurodeployError as exc:
        print(f"neurodeploy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BackendDisagreement as exc:
        # a bug of ours, not bad input: its own exit status, the report already written
        print(f"neurodeploy {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"neurodeploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
