"""The ``neurodeploy`` command line.

Every user-facing error (bad config, missing data, bad noise spec, unusable
run folder, a bad option value) is printed as one clear line and exits with
status 2; no deep traceback reaches the user. Options and inputs are checked
before any long work starts (option values by their argparse types; output
paths, input files and their shapes before training, quantizing or running).
An emulator/Lava disagreement (a bug of ours, found by ``pipeline`` and
``evaluate``) exits with status 3 after the report is written.

Every file a command writes lies under the folder or file the user named:
folders named after a profile's or a config's ``name:`` are checked with
:func:`neurodeploy.fileio.inside`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from .config import ConfigError
from .errors import NeurodeployError, bounded
from .executors import MAX_WORKERS
from .fileio import FileAccessError, check_output_file, check_output_folder, inside, require_regular_file
from .io.npy_input import MAX_STEPS

MAX_SEED = 2**32 - 1
MAX_SAMPLES = 10**9
MAX_EPOCHS = 100_000
MAX_REPEATS = 1000


def _bounded_int(lo: int, hi: int, what: str = "an integer") -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``lo..hi`` (a clean usage error, exit 2, otherwise)."""

    def parse(text: str) -> int:
        digits = str(text).strip()
        try:
            value = int(digits, 10)
        except ValueError:
            if digits.lstrip("+-").isdigit():   # more digits than Python converts: far out of range anyway
                raise argparse.ArgumentTypeError(f"{bounded(digits, 40)} is out of range; expected {what} "
                                                 f"in {lo}..{hi}") from None
            raise argparse.ArgumentTypeError(f"{bounded(text)} is not an integer; expected {what} "
                                             f"in {lo}..{hi}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{bounded(value)} is out of range; expected {what} in {lo}..{hi}")
        return value

    parse.__name__ = "integer"
    return parse


def _path_text(text: str) -> str:
    """An argparse ``type=`` for paths: not empty, no NUL byte."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("empty path")
    if "\x00" in str(text):
        raise argparse.ArgumentTypeError(f"{bounded(text)}: a NUL byte in a path")
    return str(text)


def _path(text: str) -> Path:
    """An argparse ``type=``: a non-empty path."""
    return Path(_path_text(text))


_seed = _bounded_int(0, MAX_SEED, "a seed")
_samples = _bounded_int(1, MAX_SAMPLES, "a sample count")
_lava_samples = _bounded_int(0, MAX_SAMPLES, "a sample count (0: no Lava)")
_steps = _bounded_int(1, MAX_STEPS, "a step count")
_epochs = _bounded_int(1, MAX_EPOCHS, "an epoch count")
_finetune = _bounded_int(0, MAX_EPOCHS, "an epoch count (0: post-training quantization)")
_repeats = _bounded_int(1, MAX_REPEATS, "a repeat count")
_workers = _bounded_int(1, MAX_WORKERS, "a worker count")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``neurodeploy simulate: error: argument --steps: ...``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _require_run(run: Path) -> Path:
    """A run folder must hold its checkpoint (checked before any work)."""
    from .train.checkpoint import CHECKPOINT_NAME

    if not run.is_dir():
        raise FileAccessError(f"{run}: run folder not found (expected a folder made by `neurodeploy train` "
                              f"or `neurodeploy pipeline`)")
    require_regular_file(run / CHECKPOINT_NAME, f"checkpoint of run folder {run}")
    return run


def _parse_set(items: Sequence[str]) -> dict:
    """``--set training.lr=0.05`` pairs, checked against the config schema (one-line errors)."""
    from .config import parse_set_items

    return parse_set_items(items)


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
    require_regular_file(args.config, "--config")
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else inside(Path("runs"), cfg.name, what=f"{args.config}: name")
    check_output_folder(out, "--out" if args.out else "run folder")
    result = train(cfg, out, resume=args.resume, force=args.force, progress=not args.quiet)
    last = result.metrics[-1] if result.metrics else {}
    acc = last.get("test_acc")
    print(f"run saved to {out}" + (f" (test accuracy {acc:.4f} after {last['epoch']} epochs)" if acc is not None else ""))
    return 0


def _executor_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--executor``, ``--workers`` and ``--ray-address`` (neurodeploy.executors)."""
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help=f"where {what} run: this machine (default) or a Ray cluster (pip install 'neurodeploy[ray]')")
    p.add_argument("--workers", type=_workers, metavar="N",
                   help="worker processes (local: default 1, this process; ray: default the CPU count)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="a running Ray cluster (e.g. ray://head:10001 or auto); default: start a local one")


def _executor(args: argparse.Namespace):
    from .executors import make_executor

    return make_executor(args.executor, args.workers, args.ray_address)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.robustness import evaluate_runs, parse_backends

    backends = parse_backends(args.backends)
    runs = [_require_run(Path(r)) for r in [*args.runs, *(args.compare or [])]]
    report = check_output_folder(args.report, "--report") if args.report is not None else None
    with _executor(args) as executor:     # connects now (a bad --ray-address fails before any work)
        evaluate_runs(
            runs=runs,
            noise_specs=args.noise or [],
            repeats=args.repeats,
            seed=args.seed,
            samples=args.samples,
            report_dir=report,
            progress=not args.quiet,
            backends=backends,
            profile=args.profile,
            lava_samples=args.lava_samples,
            executor=executor,
        )
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset
    from .evaluate.deployment import load_deployment
    from .evaluate.inputs import encoding_generator
    from .evaluate.inspect import inspect_deployment, write_inspection

    run = _require_run(Path(args.run))
    report = check_output_folder(args.report if args.report is not None else str(run / "inspect"), "--report")
    dep = load_deployment(run, args.profile, log=lambda m: None if args.quiet else print(m))
    data = load_dataset(dep.cfg.data.dataset, seed=dep.cfg.seed, data_dir=dep.cfg.data.data_dir)
    n = min(args.samples, len(data.y_test))
    x, y = torch.as_tensor(data.x_test[:n]), data.y_test[:n]
    network = None
    if args.network is not None:
        from .io import read_netx

        network = read_netx(require_regular_file(args.network, "netx network file"))
    result = inspect_deployment(dep, dep.inputs(x, encoding_generator(args.seed)), y, network=network,
                                source=str(args.network), lava_samples=args.lava_samples)
    paths = write_inspection(result, report, f"{run.name} on {args.profile}: float vs fixed point")
    first = result["first_divergence"]
    print("float and fixed point agree spike for spike" if first is None else
          f"first divergence: layer {first['layer']}, step {first['step']}, neurons {first['neurons']}")
    for c in result["layers"]:
        print(f"layer {c['layer']}: spike agreement {100 * c['spike_agreement']:.2f}%, count agreement "
              f"{100 * c['count_agreement']:.1f}%, rate changed for {100 * c['rate_changed']:.1f}% of neurons")
    if "emulator_vs_lava" in result:
        lf = result["emulator_vs_lava"]["first_divergence"]
        print(f"emulator vs Lava on {result['emulator_vs_lava']['samples']} samples: " +
              ("identical spikes in every layer and step" if lf is None else
               f"DIFFER at layer {lf['layer']}, step {lf['step']}, neurons {lf['neurons']}"))
    print(f"predictions agree on {100 * result['predictions']['agreement']:.1f}% of {n} samples; "
          f"written {', '.join(str(p) for p in paths)}")
    return 0


def _quantize_run(run: Path, profile: str, finetune: int = 0, progress: bool = True,
                  report_folder: Optional[Path] = None, report_stem: str = "quantization"):
    """Deploy ``run`` for ``profile``; the quantization report goes to ``report_folder`` (default: the
    deploy folder ``RUN/<profile name>``) as ``<report_stem>.{json,md}``. Returns the deployment and the
    report's Markdown path."""
    from .evaluate.deployment import prepare_deployment
    from .quant.report import print_report, write_report

    dep = prepare_deployment(run, profile, finetune, progress=progress)
    _, md = write_report(dep.quantized, report_folder if report_folder is not None else dep.folder, report_stem)
    if progress:
        print_report(dep.quantized, details=md)
    return dep, md


def _write_netx(network, path: Path) -> None:
    """Write netx HDF5; layers netx cannot hold exactly are rescaled for lava-dl (noted)."""
    import warnings

    from .io import NetxInexactWarning, write_netx

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileAccessError(f"{path.parent}: cannot create the output folder ({exc.strerror})") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NetxInexactWarning)
        write_netx(network, path, exact=False)
    for w in caught:
        if issubclass(w.category, NetxInexactWarning):
            print(f"note: {w.message}")


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .evaluate.deployment import deploy_folder
    from .quant import load_profile

    run = _require_run(Path(args.run))
    folder = deploy_folder(run, load_profile(args.profile))   # RUN/<profile name>, inside the run folder
    if args.out is not None:
        # the network and its report where the user asked: q.net, q.quantization.{json,md}
        path = check_output_file(args.out, "--out")
        report_folder, stem = path.parent, f"{path.stem}.quantization"
    else:
        path, report_folder, stem = folder / "network.net", folder, "quantization"
    dep, md = _quantize_run(run, args.profile, args.finetune, not args.quiet, report_folder, stem)
    _write_netx(dep.quantized.network, path)
    print(f"quantized network written to {path}; report in {md.with_suffix('')}.{{json,md}}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .io import export_nir, export_onnx, read_netx

    run = _require_run(Path(args.run))
    default = {"hdf5": "network.net", "nir": "model.nir", "onnx": "model_step.onnx"}[args.format]
    path = check_output_file(args.out if args.out is not None else run / default, "--out")
    if args.format == "hdf5":
        from .evaluate.deployment import deploy_folder
        from .quant import load_profile

        existing = deploy_folder(run, load_profile(args.profile)) / "network.net"
        if existing.is_file():
            network = read_netx(existing)
        else:
            print(f"no quantized network in {existing.parent}; quantizing for {args.profile} first")
            network = _quantize_run(run, args.profile, progress=not args.quiet)[0].network
        _write_netx(network, path)
    else:
        from .io.nir_export import NIRExportError
        from .io.onnx_export import ONNXExportError

        from .evaluate.deployment import MANIFEST_NAME, deploy_folder, deployable_model, load_deployment
        from .quant import load_profile
        from .train import load_run

        # the deployable float model (BatchNorm and DLIF gain folded; the fine-tuned one
        # if the run was deployed for the profile): what the fixed-point network is quantized from
        if (deploy_folder(run, load_profile(args.profile)) / MANIFEST_NAME).is_file():
            dep = load_deployment(run, args.profile, log=lambda msg: None)
            cfg, model, shape = dep.cfg, dep.model, dep.input_shape
        else:
            cfg, trained, ckpt = load_run(run)
            model, shape = deployable_model(trained), tuple(ckpt["input_shape"])
        try:
            if args.format == "nir":
                export_nir(model, path, input_shape=shape, time_steps=cfg.data.time_steps or shape[0])
            else:
                export_onnx(model, path, input_shape=shape)
        except (NIRExportError, ONNXExportError) as exc:
            # the exporter says what cannot be exported; name the run it came from
            raise type(exc)(f"{run}: cannot export as {args.format}: {exc}") from None
    print(f"{args.format} written to {path}")
    return 0


def _simulate_data(args: argparse.Namespace, network):
    """Encoded test samples of ``--data`` for ``network``: (inputs, labels); shapes checked first."""
    import numpy as np

    from .backends import BackendError
    from .data import load_dataset
    from .io.npy_input import memory_available

    data = load_dataset(args.data, seed=args.seed, data_dir=args.data_dir)
    net_shape = tuple(int(d) for d in network.input_shape)
    per_step = tuple(data.input_shape[1:]) if data.kind == "sequence" else tuple(data.input_shape)
    if int(np.prod(per_step)) != int(np.prod(net_shape)):
        raise BackendError(f"--data {args.data}: samples of shape {tuple(data.input_shape)} "
                           f"({int(np.prod(per_step))} values per step), but the network {args.network} takes "
                           f"input shape {net_shape} ({int(np.prod(net_shape))} values)")
    if data.kind == "sequence":
        if args.steps is not None:
            raise BackendError(f"--steps {args.steps}: the sequences of --data {args.data} have "
                               f"{data.input_shape[0]} steps each; drop --steps")
        network.time_steps = int(data.input_shape[0])
    elif args.steps is not None:
        network.time_steps = args.steps
    x = data.x_test[:args.samples]
    labels = data.y_test[:args.samples]
    need = len(x) * int(network.time_steps) * int(np.prod(net_shape)) * 17   # int64 inputs, copies, outputs
    avail = memory_available()
    if avail is not None and need > avail:
        raise BackendError(f"--data {args.data}: {len(x)} samples x {network.time_steps} steps need about "
                           f"{need / 2**30:.3g} GiB of memory, {avail / 2**30:.3g} GiB is available; "
                           f"pass --samples or --steps")
    enc = network.input_encoding.encode(x)
    inputs = enc if data.kind == "sequence" else np.repeat(enc[:, None], network.time_steps, axis=1)
    return inputs.reshape(len(x), inputs.shape[1], *net_shape), labels


def _cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from .backends import BackendError
    from .backends.base import input_max
    from .io import read_netx
    from .ir import is_sigma_delta

    if _is_nir(args.network):
        used = [f for f in ("drain", "record", "record_state") if getattr(args, f)]
        if used:
            raise BackendError(f"--{used[0].replace('_', '-')} applies to netx files; a NIR graph's npz holds "
                               f"every simulated step")
        return _simulate_nir(args)
    if args.backend == "float":
        raise BackendError(f"{args.network}: --backend float runs NIR graphs (MODEL.nir); a netx file is fixed point "
                           f"(emulator or lava)")
    bias_only = args.bias is not None and args.input is None and args.data is None
    if not bias_only and (args.input is None) == (args.data is None):
        raise BackendError("give either --input SPIKES.npy or --data NAME" + (", not both" if args.input else "")
                           + " (or --bias BIAS.npy with --steps T for a file with an input neuron)")
    if bias_only and (args.steps is None or args.samples is not None):
        raise BackendError("--bias without --input needs --steps T (the bias is held for T steps) and no --samples "
                           "(the bias array's first axis decides)")
    if args.input is not None and (args.samples is not None or args.steps is not None):
        raise BackendError(f"--{'samples' if args.samples is not None else 'steps'} applies to --data only; "
                           f"with --input the array's shape (samples, steps, ...) decides")
    out = check_output_file(args.out, "--out")
    network = read_netx(require_regular_file(args.network, "netx network file"),
                        **({} if args.spike_exp is None else {"spike_exp": args.spike_exp}))
    if args.spike_exp is not None and not is_sigma_delta(network):
        raise BackendError(f"{args.network}: --spike-exp sets where the point of a sigma-delta (SDNN) network's "
                           f"graded messages lies; this file has no SDNN neurons")
    network.metadata = {**network.metadata, "source": str(args.network)}  # named in the backends' messages
    if args.reset_interval is not None:
        network.reset_interval = int(args.reset_interval)
        network.reset_offset = int(args.reset_offset)
    elif args.reset_offset:
        raise BackendError("--reset-offset applies with --reset-interval only")
    labels = None
    bias = None
    if args.bias is not None:
        if args.data is not None:
            raise BackendError("--bias feeds a netx input neuron; it does not combine with --data")
        if network.input_neurons is None:
            raise BackendError(f"{args.network}: --bias sets the bias of an input layer's neuron (netx's Input "
                               f"block), but the file's input layer has none")
        bias = _load_bias_npy(require_regular_file(args.bias, "--bias file"), network.input_shape)
    source = None
    if bias_only:
        network.time_steps = int(args.steps)
        n = len(bias)
    elif args.input is not None:
        from .io.npy_input import open_input_npy

        if is_sigma_delta(network) and network.input_neurons is not None:   # int32 values into the Delta's a_in
            source = open_input_npy(args.input, network.input_shape, 2**31 - 1, what="--input", min_value=-2**31)
        else:
            source = open_input_npy(args.input, network.input_shape, input_max(network), what="--input")
        network.time_steps = int(source.shape[1])  # the input decides how many steps to feed
        n = len(source)
    else:
        inputs, labels = _simulate_data(args, network)
        n = len(inputs)
    if bias is not None and len(bias) != n:
        raise BackendError(f"--bias holds {len(bias)} samples, --input {n}")
    L = len(network.layers)
    record = bool(args.record or args.record_state)
    # an integrator readout is read from its v per step; --record-state traces every layer
    traced = list(range(L)) if args.record_state else [L - 1] if network.readout == "potential" else False
    runner, describe = _simulate_runner(args, network)
    in_shape = tuple(int(d) for d in network.input_shape)
    per_sample = max(1, int(network.time_steps) * int(np.prod(in_shape)))
    itemsize = source.dtype.itemsize if source is not None else 1 if bias_only else inputs.dtype.itemsize
    chunk = _stream_chunk(per_sample * itemsize, args.backend)
    if source is not None:
        source.check_memory(chunk)                    # memory is per chunk, whatever the number of samples

    # the numpy emulator checks every integer input value itself (per batch, in its compiled input scan):
    # no second pass over each chunk here; a refusal is turned into the file's own message below
    emulator_checks = (source is not None and args.backend == "emulator" and args.device is None
                       and not is_sigma_delta(network) and source.dtype.kind in "iu")

    def chunk_inputs(start: int, stop: int) -> np.ndarray:
        if source is not None:
            # read from the file (a view of the map), values checked here unless the emulator does
            return source.chunk(start, stop, check=not emulator_checks)
        if bias_only:
            return np.zeros((stop - start, int(network.time_steps), *in_shape), dtype=np.uint8)
        return inputs[start:stop]

    import time

    from .io.npz_stream import StreamingNpz

    writer = StreamingNpz(out, compress=args.compress)
    bar = None
    if not args.quiet and n > chunk:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(args.backend, total=n)
    correct = 0
    t0 = time.perf_counter()
    try:
        result = None
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            x = chunk_inputs(start, stop)
            extra = {} if bias is None else {"bias": bias[start:stop]}
            if record or traced:
                extra.update(record_spikes=record, record_traces=traced)
            try:
                result = runner(x, progress=not args.quiet and bar is None, **extra)
            except BackendError:
                if emulator_checks:
                    source.check(x, start)            # a bad value: the error names the file and its index
                raise
            saved = _simulate_outputs(result, network, drain=args.drain, record=record,
                                      record_state=args.record_state)
            preds = saved["predictions"]
            for key, value in saved.items():
                if np.ndim(value) == 0:
                    writer.set(key, value)
                else:
                    writer.append(key, value)
            if labels is not None:
                writer.append("labels", np.asarray(labels[start:stop]))
                correct += int(np.sum(preds == np.asarray(labels[start:stop])))
            if bar is not None:
                bar.update(task, advance=stop - start)
        seconds = time.perf_counter() - t0
        if labels is not None:
            print(f"accuracy {correct / n:.4f} on {n} samples")
        writer.write()
    finally:
        writer.close()
        if bar is not None:
            bar.stop()
    if args.verbose:
        print(f"{args.backend}: {n} samples in {seconds:.3f} s ({n / max(seconds, 1e-9):,.0f} samples/s), "
              f"chunks of {chunk}")
        for line in describe():
            print(line)
    print(f"{args.backend}: {n} samples -> {out}")
    return 0


SIMULATE_CONTRACT = """\
Driving and reading a netx file (as lava-dl's own tests do):
  --input X.npy   (samples, steps, *input_shape), the file's (C, H, W) order: fed to the
                  first layer every step; for an input layer with a neuron (netx's Input
                  block) added to that neuron's a_in.
  --bias B.npy    (samples, *input_shape): the input neuron's bias mantissas per sample,
                  held for --steps T (lava-dl's tinynet and pilotnet_lif tests).
Output .npz, on netx's time base: output_spikes (samples, T, n_out), T steps as netx
returns them for T input steps (--drain: T + latency, where latency = synaptic layers);
latency, time_steps, steps; spike_counts per layer over every simulated step;
predictions (argmax of the output spikes in steps latency..latency+T-1, or of an
integrator output layer's final v); output_v (samples, steps, n_out) for an integrator
output layer (no neuron group, or a threshold it cannot reach); --record adds spikes_<k>
for every layer, --record-state also u_<k> and v_<k>.
"""


def _simulate_outputs(result, network, *, drain: bool, record: bool, record_state: bool) -> dict:
    """``simulate``'s npz for a netx file, on netx's time base: ``T`` steps per sample (what
    ``netx.hdf5.Network`` returns for T input steps), ``T + latency`` with ``--drain``. ``predictions`` read
    the window aligned with the input (steps latency..latency+T-1) or, for an integrator output layer, its
    final v, whatever is saved."""
    import numpy as np

    steps = result.total_steps if drain else result.time_steps
    saved = {"output_spikes": result.output_spikes[:, :steps], "spike_counts": result.spike_counts,
             "predictions": result.predictions(), "latency": np.int64(result.latency),
             "time_steps": np.int64(result.time_steps), "steps": np.int64(steps)}
    if network.readout == "potential":          # an integrator readout is read from its state
        saved["output_v"] = result.layer_v[-1][:, :steps]
    for li in range(len(network.layers)) if record else ():
        saved[f"spikes_{li}"] = result.layer_spikes[li][:, :steps]
        if record_state:
            saved[f"u_{li}"] = result.layer_u[li][:, :steps]
            saved[f"v_{li}"] = result.layer_v[li][:, :steps]
    return saved


STREAM_BYTES = 1 << 26
"""Input bytes per streamed chunk of ``simulate`` (64 MiB; the emulator works on batches of 256 samples
inside a chunk, so memory stays bounded whatever the number of samples)."""


def _stream_chunk(bytes_per_sample: int, backend: str) -> int:
    """Samples per chunk: bounded memory, few enough chunks that the per-chunk cost vanishes; Lava restarts
    its processes per chunk, so its chunks are at least 4096 samples."""
    chunk = min(max(256, STREAM_BYTES // max(1, bytes_per_sample)), 65536)
    return max(chunk, 4096) if backend == "lava" else chunk


def _simulate_runner(args: argparse.Namespace, network):
    """(run(inputs, progress, [bias]) -> RunResult, describe() -> lines for --verbose) for ``--backend``."""
    from .backends import BackendError, run_network
    from .ir import is_sigma_delta

    if args.device is not None and args.backend != "emulator":
        raise BackendError(f"--device {args.device} selects the torch emulator; it applies to --backend "
                           f"emulator only, not {args.backend}")
    if args.backend == "lava":
        return (lambda x, progress, **kw: run_network(network, x, backend="lava", progress=progress, **kw)), \
            (lambda: ["lava: Loihi2SimCfg(select_tag='fixed_pt'), one Lava run per chunk"])
    if args.device is not None and (args.record or args.record_state or network.readout == "potential"
                                    or is_sigma_delta(network)):
        raise BackendError("--device runs the torch emulator, which records no per-layer spikes or states and "
                           "runs no sigma-delta or integrator-readout networks; drop --device (the numpy emulator "
                           "gives the same numbers)")
    if is_sigma_delta(network):
        return (lambda x, progress, **kw: run_network(network, x, progress=progress, **kw)), \
            (lambda: ["emulator: sigma-delta (Delta / SigmaDelta / Sigma) path"])
    if args.device is not None:
        from .backends.emulator_torch import TorchEmulator

        emu = TorchEmulator(network, device=args.device)
        return (lambda x, progress, **kw: emu.run(x, **kw)), emu.describe
    from .backends.emulator import Emulator

    emu = Emulator(network)
    return (lambda x, progress, **kw: emu.run(x, progress=progress, **kw)), emu.describe


def _load_bias_npy(path, input_shape) -> "np.ndarray":
    """``--bias``: a (samples, *input_shape) integer array (C, H, W order), the input neuron's bias mantissas."""
    import numpy as np

    from .backends import BackendError

    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise BackendError(f"--bias {path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    want = (int(d) for d in input_shape)
    want = tuple(want)
    if arr.ndim != 1 + len(want) or tuple(arr.shape[1:]) != want or arr.shape[0] < 1 \
            or arr.dtype.kind not in "iuf":
        raise BackendError(f"--bias {path}: shape {arr.shape} ({arr.dtype}), expected (samples, {', '.join(map(str, want))}) "
                           f"integers: the input neuron's bias per sample in the file's (C, H, W) order")
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.array_equal(arr, np.trunc(arr))):
        raise BackendError(f"--bias {path}: values must be integers")
    return arr.astype(np.int64)


CALIBRATION_SAMPLES = 16
CALIBRATION_RATE = 0.1
DEFAULT_NIR_STEPS = 100


def _is_nir(path) -> bool:
    return str(path).lower().endswith(".nir")


def _load_nir_graph(args: argparse.Namespace, time_steps: Optional[int] = None):
    """The FloatGraph of ``args.model`` / ``args.network`` (a .nir file); type-check notes printed."""
    import warnings

    from .io.nir_graph import NIRTypeCheckWarning, load_nir

    path = require_regular_file(args.model, "NIR model file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NIRTypeCheckWarning)
        graph = load_nir(path, dt=args.dt, time_steps=time_steps, reset=args.reset)
    for w in caught:
        if issubclass(w.category, NIRTypeCheckWarning):
            print(f"note: {w.message}")
    return graph


def _calibration(args: argparse.Namespace, graph, time_steps: int):
    """Calibration inputs ``(T, B, *input_shape)``: ``--calibration FILE.npy`` (samples, steps, ...) or
    :data:`CALIBRATION_SAMPLES` samples of random events (each input on with probability
    ``--calibration-rate`` at every step, seeded by ``--seed``)."""
    import numpy as np
    import torch

    if args.calibration is not None:
        from .io.npy_input import load_input_npy

        x = load_input_npy(args.calibration, graph.input_shape, 1, what="--calibration")
        return torch.from_numpy(np.moveaxis(x, 1, 0).astype(np.float32))
    gen = torch.Generator().manual_seed(int(args.seed))
    return (torch.rand(time_steps, CALIBRATION_SAMPLES, *graph.input_shape, generator=gen)
            < args.calibration_rate).float()


def _quantize_nir(args: argparse.Namespace, graph, time_steps: int):
    """The NIR graph quantized for ``args.profile`` (the walker's ``quantize_graph``), event input."""
    from .quant import load_profile
    from .quant.quantizer import quantize_graph

    import re

    profile = load_profile(args.profile)
    names = graph.metadata.get("node_names") or []
    try:
        return quantize_graph(graph, profile, time_steps=time_steps, input_encoding="spikes",
                              calibration=_calibration(args, graph, time_steps), name=Path(args.model).stem,
                              cuba_bias="approximate" if args.approximate_cuba_bias else "refuse")
    except NeurodeployError as exc:
        # the quantizer names graph nodes by index; add the NIR node's name
        def named(m: "re.Match") -> str:
            i = int(m.group(1))
            return f"{m.group(0)[:-1]}, NIR node '{names[i]}')" if i < len(names) else m.group(0)

        raise type(exc)(f"{args.model}: " + re.sub(r"node (\d+) \((\w+)\)", named, str(exc), count=1)) from None


def _cmd_import(args: argparse.Namespace) -> int:
    from .quant.report import print_report, write_report

    out = check_output_file(args.out, "--out")
    graph = _load_nir_graph(args, args.time_steps)
    steps = args.time_steps or graph.time_steps
    if steps is None and args.calibration is not None:
        from .io.npy_input import load_input_npy
        steps = int(load_input_npy(args.calibration, graph.input_shape, 1, what="--calibration").shape[1])
    steps = int(steps or DEFAULT_NIR_STEPS)
    result = _quantize_nir(args, graph, steps)
    _, md = write_report(result, out.parent, f"{out.stem}.quantization")
    if not args.quiet:
        print_report(result, details=md)
    _write_netx(result.network, out)
    kinds = " -> ".join(type(n).__name__ for n in graph.nodes)
    print(f"{args.model}: {kinds} (dt {graph.dt:g} s, {steps} steps) quantized for {args.profile}; network written "
          f"to {out}; report in {md.with_suffix('')}.{{json,md}}")
    return 0


def _simulate_nir(args: argparse.Namespace) -> int:
    """``simulate MODEL.nir``: float (GraphModule), or quantized first (as ``import``) on the emulator / Lava."""
    import numpy as np

    from .backends import BackendError
    from .fileio import atomic_path
    from .io.npy_input import load_input_npy

    if args.input is None or args.data is not None:
        raise BackendError("simulate MODEL.nir takes --input EVENTS.npy (samples, steps, *input_shape) of 0/1 events")
    if args.samples is not None or args.steps is not None:
        raise BackendError(f"--{'samples' if args.samples is not None else 'steps'} applies to --data only; "
                           f"with --input the array's shape (samples, steps, ...) decides")
    out = check_output_file(args.out, "--out")
    args.model = args.network
    graph = _load_nir_graph(args)
    inputs = load_input_npy(args.input, graph.input_shape, 1, what="--input")
    steps = int(inputs.shape[1])
    if args.backend == "float":
        import torch

        from .models.graph_module import GraphModule

        module = GraphModule(graph)
        with torch.no_grad():
            seq = module(torch.from_numpy(np.moveaxis(inputs, 1, 0).astype(np.float32)))
            logits = module.logits(seq)
        output = np.moveaxis(seq.numpy(), 0, 1).reshape(len(inputs), steps, -1)
        saved = {"output": output, "predictions": logits.reshape(len(inputs), -1).argmax(-1).numpy(),
                 "time_steps": np.int64(steps), "latency": np.int64(0)}
        if graph.readout == "spikes":
            saved["output_spikes"] = output.astype(np.uint8)
            saved["spike_counts"] = output.sum(1).astype(np.int64)
    else:
        from .backends import run_network

        result = _quantize_nir(args, graph, steps)
        network = result.network
        network.metadata = {**network.metadata, "source": str(args.network)}
        network.time_steps = steps
        run = run_network(network, inputs.astype(np.int64), backend=args.backend, progress=not args.quiet)
        saved = {"output_spikes": run.output_spikes, "spike_counts": run.spike_counts,
                 "predictions": run.predictions(), "latency": np.int64(run.latency),
                 "time_steps": np.int64(run.time_steps)}
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if args.compress else np.savez)(fh, **saved)
    print(f"{args.backend}: {len(inputs)} samples of {args.network} -> {out}")
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from .evaluate.pipeline import run_pipeline

    require_regular_file(args.config, "--config")
    run_dir = inside(Path("runs"), args.config.stem, what="--config file name") if args.out is None \
        else Path(args.out)
    check_output_folder(run_dir, "--out" if args.out is not None else "run folder")
    with _executor(args) as executor:     # connects now (a bad --ray-address fails before training)
        report = run_pipeline(Path(args.config), run_dir=run_dir, profile=args.profile,
                              lava_samples=args.lava_samples, test_samples=args.samples, epochs=args.epochs,
                              seed=args.seed, finetune=args.finetune, force=args.force, progress=not args.quiet,
                              executor=executor)
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


def _cmd_fit(args: argparse.Namespace) -> int:
    """``fit RUN_OR_NET``: the per-layer and per-core tables of the mapping onto --profile's chip."""
    from .quant import load_profile
    from .quant.fit import FitError, fit_network, print_fit

    profile = load_profile(args.profile)
    target = Path(args.target)
    if target.is_dir():
        from .evaluate.deployment import load_deployment

        network = load_deployment(_require_run(target), args.profile, log=lambda m: None).network
    else:
        from .io import read_netx

        network = read_netx(require_regular_file(target, "netx network file"))
    report = fit_network(network, profile)
    print_fit(report, per_core=not args.layers_only)
    if args.json is not None:
        import json

        from .fileio import write_text_atomic

        write_text_atomic(check_output_file(args.json, "--json"), json.dumps(report.to_dict(), indent=1))
    if not report.fits:
        raise FitError(f"{target}: does not fit profile {profile.name!r}: " + "; ".join(report.problems))
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS, DataError, load_dataset

    for name in DATASETS:
        try:
            d = load_dataset(name, data_dir=args.data_dir)
            print(f"{name:14s} {d.kind:8s} train {d.n_train:6d}  test {d.n_test:6d}  "
                  f"shape {tuple(d.input_shape)}  classes {d.n_classes}")
        except DataError as exc:
            # the listing keeps the reason; the how-to of a missing data set is in the error of the command
            print(f"{name:14s} unavailable: {str(exc).split('; to get them:')[0]}")
    return 0


def _positive_float(text: str) -> float:
    """An argparse ``type=``: a finite positive number."""
    import math

    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{bounded(text)} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{bounded(text)}: expected a positive number")
    return value


def _rate(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{bounded(text)}: a rate is at most 1")
    return value


def _nir_options(p: argparse.ArgumentParser) -> None:
    """Options of reading a NIR graph and calibrating its quantization (``import`` and ``simulate MODEL.nir``)."""
    p.add_argument("--dt", type=_positive_float, metavar="SECONDS",
                   help="time step of the forward-Euler discretisation (default: the graph's own, as our exports "
                        "record it; 1 for graphs without time constants, e.g. Sinabs' IF nets; the NIR paper's "
                        "LIF and Braille graphs use 1e-4)")
    p.add_argument("--reset", choices=("zero", "subtract"),
                   help="reset of every spiking node (default: NIR's, to v_reset = 0); subtract runs in float only")
    p.add_argument("--calibration", type=_path_text, metavar="FILE.npy",
                   help="(samples, steps, *input_shape) 0/1 events whose peak currents calibrate the quantization "
                        f"(default: {CALIBRATION_SAMPLES} samples of random events)")
    p.add_argument("--calibration-rate", type=_rate, default=CALIBRATION_RATE,
                   help=f"probability of an event per input and step in the random calibration (default "
                        f"{CALIBRATION_RATE})")
    p.add_argument("--approximate-cuba-bias", action="store_true",
                   help="run CubaLIF layers whose synapse has a bias with that bias on v (Loihi cannot add it to "
                        "the current; default: refuse, naming the node)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="neurodeploy",
        description="Train robust spiking neural networks (Norse) and deploy them to Loihi-class fixed point "
                    "(quantize, export netx HDF5 / NIR / ONNX, simulate on Lava or the bit-exact emulator).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a config in models/")
    p.add_argument("--config", required=True, type=_path, help="model file, e.g. models/mnist5k-mlp-dlif.yaml")
    p.add_argument("--out", type=_path_text, help="run folder (default runs/<config name>)")
    p.add_argument("--epochs", type=_epochs, help="override training.epochs")
    p.add_argument("--seed", type=_seed, help="override the seed (data split, init, noise)")
    p.add_argument("--data-dir", type=_path, help="folder with local fashion-mnist / cifar10 files")
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
    p.add_argument("--repeats", type=_repeats, default=1, help="seeds per noise level")
    p.add_argument("--seed", type=_seed, default=0, help="base seed of the noise")
    p.add_argument("--samples", type=_samples, help="evaluate only the first N test samples")
    p.add_argument("--report", type=_path_text, help="folder for JSON, Markdown and PNG results")
    p.add_argument("--backends", default="float",
                   help="comma-separated: float (torch), emulator (fixed point, all samples), lava (subset)")
    p.add_argument("--profile", default="loihi2", help="hardware profile of the fixed-point network")
    p.add_argument("--lava-samples", type=_lava_samples, default=100, help="samples per level on Lava")
    _executor_options(p, "the sweep points")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("inspect", help="where float and fixed point part ways: layer by layer, step by step")
    p.add_argument("run", help="run folder (runs/X), as deployed for --profile")
    p.add_argument("--profile", default="loihi2", help="hardware profile of the deployment")
    p.add_argument("--network", type=_path_text, metavar="NET.net",
                   help="a modified or foreign fixed-point file of the same architecture, instead of the deployment's")
    p.add_argument("--samples", type=_samples, default=100, help="test samples to compare (default 100)")
    p.add_argument("--lava-samples", type=_lava_samples, default=0,
                   help="also run the first N on Lava and compare with the emulator, every layer and step")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the input encoding (Poisson models)")
    p.add_argument("--report", type=_path_text, help="folder for inspect.{json,md,png} (default RUN/inspect)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("quantize", help="quantize a trained run to fixed point for a hardware profile")
    p.add_argument("run", help="run folder (runs/X)")
    p.add_argument("--profile", default="loihi2", help="profile name in hw_profiles/ or a profile file")
    p.add_argument("--out", type=_path_text,
                   help="netx HDF5 file to write, its report beside it (default RUN/<profile>/network.net)")
    p.add_argument("--finetune", type=_finetune, default=0, metavar="N",
                   help="quantization-aware fine-tuning epochs (straight-through rounding) before quantizing")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("export", help="export a run as netx HDF5 (fixed point), NIR or ONNX (float)")
    p.add_argument("run", help="run folder (runs/X)")
    p.add_argument("--format", required=True, choices=("hdf5", "nir", "onnx"))
    p.add_argument("--out", type=_path_text, help="output file (default in the run folder)")
    p.add_argument("--profile", default="loihi2", help="hardware profile: its deployment (fine-tuned model, netx file) is what is exported")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import", help="import a NIR graph (Norse, snnTorch, Sinabs, ...), quantize it for a profile "
                                      "and write the netx file")
    p.add_argument("model", type=_path_text, help="NIR graph file (.nir)")
    p.add_argument("--profile", default="loihi2", help="profile name in hw_profiles/ or a profile file")
    p.add_argument("--out", required=True, type=_path_text,
                   help="netx HDF5 file to write; its quantization report beside it (OUT.quantization.{json,md})")
    _nir_options(p)
    p.add_argument("--time-steps", type=_steps,
                   help=f"steps per sample (default: the graph's, else the --calibration file's, else "
                        f"{DEFAULT_NIR_STEPS})")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random calibration events")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("simulate", help="run a netx HDF5 network on Lava or the emulator, or a NIR graph "
                                        "(float, or quantized first)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=SIMULATE_CONTRACT)
    p.add_argument("network", type=_path_text, help="netx HDF5 network (.net/.h5), or a NIR graph (.nir)")
    p.add_argument("--backend", choices=("lava", "emulator", "float"), default="emulator",
                   help="float: the NIR graph in torch; emulator / lava: fixed point (a NIR graph is quantized "
                        "first, as by `import`)")
    p.add_argument("--profile", default="loihi2", help="with a NIR graph: the profile it is quantized for")
    _nir_options(p)
    p.add_argument("--input", type=_path_text,
                   help="(samples, steps, *input_shape) integer .npy in the file's (C, H, W) order: spikes or graded "
                        "values into the first layer; for an input layer with an SDNN neuron (netx's Delta encoder, "
                        "lava-dl's PilotNet SDNN) any int32 values, added to that neuron's a_in every step (sigma-delta "
                        "networks: output_spikes holds the graded messages, a sigma_output layer its value)")
    p.add_argument("--spike-exp", type=_bounded_int(0, 24, "an exponent"), metavar="E",
                   help="sigma-delta (SDNN) files: netx's Network(spike_exp=E), the fraction bits of the graded "
                        "messages (thresholds and biases are scaled by 2**(E + 6)); 0..24, default 6 as in netx")
    p.add_argument("--bias", type=_path_text, metavar="BIAS.npy",
                   help="(samples, *input_shape) integer .npy in the file's (C, H, W) order: the bias mantissas of "
                        "the input layer's neuron (netx's Input block; lava-dl's tinynet / pilotnet_lif images), held "
                        "for every step; with --steps T alone (no --input) the input neuron gets no other input")
    p.add_argument("--reset-interval", type=_steps, metavar="N",
                   help="netx's reset schedule (LIFReset): layer k (0: the input neuron) is zeroed before step "
                        "n when (n + 1) %% N == (K + 1 + k) %% N")
    p.add_argument("--reset-offset", type=int, default=0, metavar="K", help="offset of --reset-interval (default 0)")
    p.add_argument("--drain", action="store_true",
                   help="netx file: keep the `latency` extra steps (one per synaptic layer) after the T input "
                        "steps; default: T steps, as netx returns them")
    p.add_argument("--record", action="store_true",
                   help="netx file: also save every layer's spikes per step (spikes_<k>, samples x steps x n)")
    p.add_argument("--record-state", action="store_true",
                   help="netx file: --record plus every layer's u and v per step (u_<k>, v_<k>; Lava: read by its "
                        "Monitors)")
    p.add_argument("--data", help="encode this data set's test split instead of --input")
    p.add_argument("--samples", type=_samples, help="first N test samples with --data")
    p.add_argument("--steps", type=_steps,
                   help=f"input steps per sample with --data or --bias alone, 1..{MAX_STEPS} (default: the "
                        f"network's T)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="data split seed with --data; with a NIR graph also the seed of its calibration events")
    p.add_argument("--data-dir", type=_path)
    p.add_argument("--out", required=True, type=_path_text, help="output .npz (uncompressed; see --compress)")
    p.add_argument("--compress", action="store_true", help="deflate the output .npz (smaller, slower to write)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="run the torch implementation of the emulator on this device (default: the numpy emulator)")
    p.add_argument("--verbose", action="store_true",
                   help="print the run's rate and, per layer, the emulator's accumulation paths")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("pipeline", help="the end-to-end job: train, quantize, export, compare float vs fixed point")
    p.add_argument("--config", required=True, type=_path)
    p.add_argument("--out", type=_path_text, help="run folder (default runs/<config file name>)")
    p.add_argument("--profile", default="loihi2")
    p.add_argument("--lava-samples", type=_lava_samples, default=200, help="test samples to run on Lava (0: skip Lava)")
    p.add_argument("--samples", type=_samples, help="limit the test split (default: all)")
    p.add_argument("--finetune", type=_finetune, default=2, metavar="N",
                   help="quantization-aware fine-tuning epochs before quantizing (0: post-training only)")
    p.add_argument("--epochs", type=_epochs, help="override training.epochs (a larger count extends a finished run)")
    p.add_argument("--seed", type=_seed, help="override the seed (data split, init, noise, spike encoding)")
    p.add_argument("--force", action="store_true",
                   help="retrain when the run folder holds a run of another config (default: refuse)")
    _executor_options(p, "the Lava subset's sample ranges")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("fit", help="does a run's deployment or a netx file fit the chip: cores, memory, axons")
    p.add_argument("target", metavar="RUN_OR_NET", help="run folder (its deployment for --profile) or a netx .net file")
    p.add_argument("--profile", default="loihi2", help="profile name in hw_profiles/ or a profile file")
    p.add_argument("--layers-only", action="store_true", help="only the per-layer table, not the per-core one")
    p.add_argument("--json", type=_path_text, metavar="FILE.json", help="also write every number of the mapping")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("datasets", help="list the data sets and whether they are available")
    p.add_argument("--data-dir", type=_path)
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
    """Run one command; return its exit status (0 ok, 2 user error, 3 disagreement, 130 interrupted)."""
    command = "neurodeploy"
    try:
        _process_setup()
        from .evaluate.agreement import BackendDisagreement

        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:   # a usage error (one line, status 2) or --help (status 0)
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        command = f"neurodeploy {args.command}"
        # SIGTERM (kill, a job scheduler) takes the same clean path as Ctrl-C
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return int(args.func(args) or 0)
        except NeurodeployError as exc:
            print(f"{command}: error: {exc}", file=sys.stderr)
            return 2
        except BackendDisagreement as exc:
            # a bug of ours, not bad input: its own exit status, the report already written
            print(f"{command}: error: {exc}", file=sys.stderr)
            return 3
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Entry point of the ``neurodeploy`` console script: :func:`main`, then exit with its status.

    After an interrupt, Lava's children and shared memory are already cleaned
    up (``backends/lava.py``), so the process exits at once instead of spending
    1-2 s tearing down torch and Lava.
    """
    import os

    rc = main()
    if rc == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    raise SystemExit(rc)


if __name__ == "__main__":  # pragma: no cover
    run()
