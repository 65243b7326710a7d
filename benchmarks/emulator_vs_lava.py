"""Emulator vs Lava on real spike traffic: samples/s, ratios, GEMM rooflines, CLI cost, streamed memory.

One command, one process, one run (about 5-8 minutes on a quiet 2-core machine)::

    PYTHONPATH=. $PY benchmarks/emulator_vs_lava.py

writes ``benchmarks/results/emulator_vs_lava.{json,md}`` with the commit, the
machine and its load (load average, and the CPU other processes used during
each block). Workloads (all quantized for ``loihi2`` as the pipeline does):

* ``mlp-graded``: the default network (``models/mnist5k-mlp-dlif.yaml``,
  784-256-10 DLIF, T = 8), direct-encoded test images as the pipeline makes them
  (8-bit graded input, every step identical);
* ``mlp-binary-{1,5,20,50}``: the same architecture trained on Poisson spikes
  (``data.encoder=poisson``, so its hidden layer fires on spike input), fed
  uniform Bernoulli spikes at 1 / 5 / 20 / 50% per input and step (uint8);
  ``mlp-poisson``: that network on the test images Poisson-encoded by the pipeline;
* ``conv-graded``: ``models/mnist5k-conv-dlif.yaml`` (three strided 3x3 convs and
  two dense layers), direct-encoded test images;
* ``srnn``: ``models/vowels-srnn-dlif.yaml`` (12-64 recurrent-10, 25 steps of the
  JapaneseVowels sequences, graded).

Per workload: the numpy emulator's API (``Emulator.run``, default settings: batches of 256 on every
core, the compiled LIF kernels of ``backends/kernels.py``; median
of ``--rounds``) with the accumulation path each layer took and the measured
activity; the torch emulator on CPU (``TorchEmulator``); the CLI
(``neurodeploy simulate --backend emulator`` in a subprocess on a memory-mapped
``.npy``, marginal rate between two sample counts, so start-up cancels out);
Lava (``Loihi2SimCfg(select_tag="fixed_pt")``, steady state after
``--lava-warmup`` samples, the faster of two runs) and the bit-for-bit agreement of the emulator with it;
the float32 (numpy BLAS) and int8 (onnxruntime ``MatMulInteger``) GEMM rates of
the dense-equivalent work Lava does (every layer on every step, conv layers as
their im2col GEMMs), as samples/s. Finally the peak RSS of ``simulate`` against
the number of samples (streamed: it should not grow). No GPU was lent to this
run: the torch emulator's CUDA figures are absent unless ``torch.cuda`` finds one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, ROOT, CpuMonitor, command_line, machine_info, machine_line, now_iso

import numpy as np  # noqa: E402

from neurodeploy.backends import emulator as emulator_mod  # noqa: E402
from neurodeploy.backends import lava as lava_mod  # noqa: E402
from neurodeploy.backends import run_network  # noqa: E402
from neurodeploy.ir import ConvLayer  # noqa: E402

RUNS = ROOT / "benchmarks" / "runs"
MODELS = ROOT / "models"
PY = sys.executable
RATES = (0.01, 0.05, 0.20, 0.50)
CLI_REPEATS = 5


# --------------------------------------------------------------------------- setup
def build(name: str, config: Path, epochs: int, profile: str, overrides: dict, log=print):
    """The quantized network of run ``benchmarks/runs/<name>`` (trained here if absent), its test inputs as the
    pipeline makes them, and labels."""
    from neurodeploy.config import load_config
    from neurodeploy.data import load_dataset
    from neurodeploy.evaluate.deployment import load_deployment
    from neurodeploy.evaluate.inputs import encoding_generator
    from neurodeploy.train.checkpoint import CHECKPOINT_NAME
    from neurodeploy.train.loop import train

    run_dir = RUNS / name
    trained_here = False
    if not (run_dir / CHECKPOINT_NAME).is_file():
        log(f"{run_dir} holds no trained run: training {config.name} {overrides} for {epochs} epochs")
        train(load_config(config, {"training.epochs": epochs, **overrides}), run_dir, progress=False, log=log)
        trained_here = True
    dep = load_deployment(run_dir, profile, log=log)
    cfg, ckpt = dep.cfg, dep.checkpoint
    data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
    inputs = np.asarray(dep.inputs(data.x_test, encoding_generator(cfg.seed)).values)
    info = {"run_dir": rel(run_dir), "epochs_trained": int(ckpt.get("epoch", -1)), "trained_here": trained_here,
            "config": cfg.name, "dataset": cfg.data.dataset, "encoder": cfg.data.encoder}
    return dep.network, inputs, np.asarray(data.y_test), info


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def blas_info() -> dict:
    """numpy version and the BLAS it calls (library, version, kernel architecture, threads)."""
    info = {"numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{**{k: p.get(k) for k in ("user_api", "internal_api", "version", "architecture",
                                                           "threading_layer", "num_threads")},
                                "library": Path(p.get("filepath", "")).name,
                                "numpy_uses_it": "numpy" in str(p.get("filepath", ""))}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    try:
        import importlib.metadata

        info["lava-nc"] = importlib.metadata.version("lava-nc")
        info["numba"] = importlib.metadata.version("numba")
        info["onnxruntime"] = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        pass
    return info



def run_lava_timed(network, inputs):
    """run_lava with a timestamp per sample (taken when the backend reads its spikes)."""
    stamps = []
    original = lava_mod._read_sample

    def stamped(*args, **kwargs):
        result = original(*args, **kwargs)
        stamps.append(time.perf_counter())
        return result

    lava_mod._read_sample = stamped
    try:
        t0 = time.perf_counter()
        res = run_network(network, inputs, backend="lava")
        total = time.perf_counter() - t0
    finally:
        lava_mod._read_sample = original
    return res, total, [s - t0 for s in stamps]



def dense_equivalent(network) -> list[tuple[int, int, int]]:
    """(rows per sample, k, n) of each layer's GEMM as Lava computes it: every layer on all T + latency steps
    (conv: im2col rows = steps x output positions per group, ``groups`` GEMMs folded into n)."""
    P = int(network.time_steps) + int(network.latency)
    shapes = []
    for layer in network.layers:
        if isinstance(layer, ConvLayer):
            o, cg, kh, kw = layer.weight.shape
            _, oh, ow = layer.out_shape
            shapes.append((P * oh * ow, int(cg * kh * kw), int(o)))
        else:
            shapes.append((P, int(layer.weight.shape[1]), int(layer.weight.shape[0])))
            if getattr(layer, "weight_rec", None) is not None:
                shapes.append((P, int(layer.weight_rec.shape[1]), int(layer.weight_rec.shape[0])))
    return shapes


def _best(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_rooflines(network, activity: float, batch: int = 256) -> dict:
    """Samples/s the dense-equivalent GEMMs alone allow: numpy float32 BLAS and onnxruntime int8."""
    from neurodeploy.backends.accumulate import _MatMulInteger

    rng = np.random.default_rng(0)
    f32 = i8 = 0.0
    layers = []
    for rows_ps, k, n in dense_equivalent(network):
        rows = rows_ps * batch
        while rows * k > (1 << 26):               # keep the operand at most 64 M elements; rate per row holds
            rows //= 2
        x = (rng.random((rows, k)) < max(activity, 0.01)).astype(np.uint8)
        w = rng.integers(-128, 128, (k, n))
        xf, wf = x.astype(np.float32), w.astype(np.float32)
        gemm = _MatMulInteger(w.astype(np.int8))
        t32 = _best(lambda: xf @ wf) / rows * rows_ps
        t8 = _best(lambda: gemm(x)) / rows * rows_ps
        f32 += t32
        i8 += t8
        layers.append({"gemm": f"({rows_ps} x {k}) @ ({k} x {n}) per sample", "gflops_f32": round(2 * k * n * rows_ps / t32 / 1e9, 1),
                       "gops_int8": round(2 * k * n * rows_ps / t8 / 1e9, 1)})
    return {"layers": layers, "macs_per_sample": int(sum(r * k * n for r, k, n in dense_equivalent(network))),
            "samples_per_s_f32": 1.0 / f32, "samples_per_s_int8": 1.0 / i8}


def api_rate(network, x, rounds: int) -> tuple[float, list[float], object, list[str]]:
    emu = emulator_mod.Emulator(network)
    emu.run(x[: min(len(x), 512)])                # warm-up: sessions, caches
    secs, res = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        res = emu.run(x)
        secs.append(time.perf_counter() - t0)
    rates = [len(x) / s for s in secs]
    return statistics.median(rates), rates, res, emu.describe()


def torch_rate(network, x, device: str = "cpu") -> tuple[float, bool]:
    from neurodeploy.backends.emulator_torch import TorchEmulator

    emu = TorchEmulator(network, device=device)
    emu.run(x[:64])
    t0 = time.perf_counter()
    res = emu.run(x)
    rate = len(x) / (time.perf_counter() - t0)
    ref = run_network(network, x)
    return rate, bool(np.array_equal(res.output_spikes, ref.output_spikes)
                      and np.array_equal(res.spike_counts, ref.spike_counts))


def save_input(x: np.ndarray, path: Path) -> Path:
    """``x`` as .npy, flushed to disk, so the timed runs read it from the page cache without competing
    with the write-back of its dirty pages."""
    with open(path, "wb") as f:
        np.save(f, x)
        f.flush()
        os.fsync(f.fileno())
    return path


def cli_run(net_file: Path, x: np.ndarray, folder: Path, tag: str, inp: Path = None) -> dict:
    """One ``simulate`` subprocess on ``x`` saved as .npy (``inp``: already saved there): wall seconds and
    peak RSS (wait4)."""
    own_file = inp is None
    if own_file:
        inp = save_input(x, folder / f"{tag}.npy")
    out = folder / f"{tag}.npz"
    argv = ["simulate", str(net_file), "--input", str(inp), "--out", str(out), "--quiet"]
    # ``python -m neurodeploy`` as it runs, then its own VmHWM (per address space: a forked child's
    # rusage would count the benchmark's memory before exec)
    code = ("import sys; from neurodeploy.cli import main; rc = main(sys.argv[1:]); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1], "
            "file=sys.stderr); sys.exit(rc)")
    cmd = [PY, "-c", code, *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"neurodeploy {' '.join(argv)} failed: {proc.stderr.strip()[-400:]}")
    hwm_kb = int(proc.stderr.strip().splitlines()[-1])
    z = np.load(out)
    result = {"samples": len(x), "seconds": wall, "peak_rss_mib": round(hwm_kb / 1024, 1),
              "input_mib": round(x.nbytes / 2**20, 1), "predictions": z["predictions"].copy()}
    if own_file:
        inp.unlink()
    out.unlink()
    return result


def cli_marginal(network, x_small: np.ndarray, x_big: np.ndarray, folder: Path, tag: str) -> dict:
    net_file, exact = netx_file(network, folder / f"{tag}.net")
    from neurodeploy.io import read_netx

    # CLI_REPEATS runs of each size, alternating, on inputs written once; the median of each (single runs are
    # noisy on this machine)
    in_a = save_input(x_small, folder / f"{tag}-a.npy")
    in_b = save_input(x_big, folder / f"{tag}-b.npy")
    runs_a, runs_b = [], []
    for _ in range(CLI_REPEATS):
        runs_a.append(cli_run(net_file, x_small, folder, tag + "-a", in_a))
        runs_b.append(cli_run(net_file, x_big, folder, tag + "-b", in_b))
    in_a.unlink()
    in_b.unlink()
    a = sorted(runs_a, key=lambda r: r["seconds"])[len(runs_a) // 2]
    b = sorted(runs_b, key=lambda r: r["seconds"])[len(runs_b) // 2]
    ref = run_network(read_netx(net_file), x_big).predictions()
    return {"samples": [a["samples"], b["samples"]], "seconds": [a["seconds"], b["seconds"]],
            "marginal_samples_per_s": (b["samples"] - a["samples"]) / (b["seconds"] - a["seconds"])
            if b["seconds"] > a["seconds"] else None,
            "startup_seconds": a["seconds"] - a["samples"] * (b["seconds"] - a["seconds"]) / (b["samples"] - a["samples"]),
            "sample_counts_note": f"marginal rate = extra samples / extra seconds between the two sizes (median of "
                                  f"{CLI_REPEATS} alternating runs of each)",
            "all_seconds": [[r["seconds"] for r in runs_a], [r["seconds"] for r in runs_b]],
            "peak_rss_mib": [a["peak_rss_mib"], b["peak_rss_mib"]],
            "predictions_equal_api": bool(np.array_equal(b["predictions"], ref)), "netx_exact": exact}


def netx_file(network, path: Path) -> tuple[Path, bool]:
    """``network`` as a netx file (exactly, else rescaled as ``neurodeploy export`` writes it: then the CLI
    runs that file's network, of the same shape; its predictions are compared with the API on the file)."""
    import warnings

    from neurodeploy.io import write_netx
    from neurodeploy.io.netx_semantics import NetxExportError

    try:
        write_netx(network, path)
        return path, True
    except NetxExportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_netx(network, path, exact=False)
        return path, False


LAVA_RUNS = 2


def lava_rate(network, x, warmup: int) -> dict:
    """Lava's steady rate: the faster of LAVA_RUNS runs (Lava's own rate varies by up to ~2x between runs on
    this virtual machine; the faster one is the conservative figure for the ratios), and its agreement."""
    steadies, totals, firsts = [], [], []
    for _ in range(LAVA_RUNS):
        res, total, stamps = run_lava_timed(network, x)
        steadies.append((len(stamps) - warmup) / (stamps[-1] - stamps[warmup - 1])
                        if len(stamps) > warmup + 1 else float("nan"))
        totals.append(total)
        firsts.append(stamps[0] if stamps else None)
    steady = max(steadies)
    total = min(totals)
    emu = run_network(network, x)
    return {"samples": len(x), "samples_per_s_steady": steady, "samples_per_s_end_to_end": len(x) / total,
            "steady_rates_of_each_run": steadies,
            "seconds_to_first_sample": firsts[0],
            "identical_output_spikes": float(np.mean([np.array_equal(a, b) for a, b in
                                                      zip(emu.output_spikes, res.output_spikes)])),
            "identical_layer_spike_counts": float(np.mean(np.all(emu.spike_counts == res.spike_counts, axis=1))),
            "lava_spikes": int(res.spike_counts.sum())}


def tile(x: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n])


def compact(x: np.ndarray) -> np.ndarray:
    return x.astype(np.uint8) if x.min() >= 0 and x.max() <= 255 else x


# --------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs when a run has to be trained")
    ap.add_argument("--profile", default="loihi2")
    ap.add_argument("--samples", type=int, default=32000, help="samples per API measurement")
    ap.add_argument("--rounds", type=int, default=5, help="timed API runs per workload (median)")
    ap.add_argument("--torch-samples", type=int, default=2000)
    ap.add_argument("--cli-samples", type=int, nargs=2, default=(2000, 100000),
                    help="the two sample counts of the CLI's marginal rate")
    ap.add_argument("--memory-samples", type=int, nargs="+", default=(2000, 20000, 160000),
                    help="sample counts of the simulate peak-memory series (mlp-binary-20)")
    ap.add_argument("--lava-samples", type=int, default=120,
                    help="Lava samples per workload (conv: a third); its steady rate is over all but the warm-up")
    ap.add_argument("--lava-warmup", type=int, default=5)
    ap.add_argument("--skip-lava", action="store_true", help="development runs only: no Lava, no ratios to it")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    t_start = time.perf_counter()
    machine = {**machine_info(), "blas": blas_info()}
    try:
        import torch
        machine["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        machine["cuda"] = None

    mlp, mlp_x, _, mlp_info = build("mnist5k-mlp-dlif", MODELS / "mnist5k-mlp-dlif.yaml", args.epochs,
                                    args.profile, {})
    spk, spk_x, _, spk_info = build("mnist5k-mlp-dlif-poisson", MODELS / "mnist5k-mlp-dlif.yaml", args.epochs,
                                    args.profile, {"data.encoder": "poisson"})
    conv, conv_x, _, conv_info = build("mnist5k-conv-dlif", MODELS / "mnist5k-conv-dlif.yaml", args.epochs,
                                       args.profile, {})
    srnn, srnn_x, _, srnn_info = build("vowels-srnn-dlif", MODELS / "vowels-srnn-dlif.yaml", args.epochs,
                                       args.profile, {})
    rng = np.random.default_rng(0)
    n = args.samples
    T = int(spk.time_steps)
    workloads = {"mlp-graded": (mlp, compact(tile(mlp_x, n)), mlp_info, "graded 8-bit, direct encoding")}
    for p in RATES:
        workloads[f"mlp-binary-{round(100 * p)}"] = (
            spk, (rng.random((n, T, *spk.input_shape)) < p).astype(np.uint8), spk_info,
            f"binary, Bernoulli {100 * p:g}% per input and step")
    workloads["mlp-poisson"] = (spk, compact(tile(spk_x, n)), spk_info, "binary, the pipeline's Poisson encoding")
    workloads["conv-graded"] = (conv, compact(tile(conv_x, max(n // 32, 500))), conv_info,
                                "graded 8-bit, direct encoding")
    workloads["srnn"] = (srnn, compact(tile(srnn_x, n)), srnn_info, "graded, the JapaneseVowels sequences")

    results = {}
    folder = Path(tempfile.mkdtemp(prefix="emu-bench-"))
    try:
        for name, (net, x, info, desc) in workloads.items():
            print(f"[{time.perf_counter() - t_start:.0f} s] {name}", flush=True)
            r = {"network": info, "inputs": desc, "input_shape": list(x.shape), "input_dtype": str(x.dtype),
                 "input_activity": float(np.count_nonzero(x) / x.size), "time_steps": int(net.time_steps),
                 "latency": int(net.latency)}
            with CpuMonitor() as cpu:
                med, rates, res, paths = api_rate(net, x, args.rounds)
            sizes = [lay.neurons.bias_mant.size if hasattr(lay.neurons, "bias_mant") else 1 for lay in net.layers]
            steps = int(net.time_steps) + int(net.latency)
            r.update(api_samples_per_s=med, api_rates=rates, api_cpu=cpu.result, paths=paths,
                     layer_activity=[float(res.spike_counts[:, i].mean() / (sizes[i] * steps))
                                     for i in range(len(sizes))])
            tx = x[: args.torch_samples // (8 if name.startswith("conv") else 1)]
            r["torch_cpu_samples_per_s"], r["torch_cpu_equal_numpy"] = torch_rate(net, tx)
            r["roofline"] = gemm_rooflines(net, r["input_activity"])
            if name in ("mlp-graded", "mlp-binary-1", "mlp-binary-20", "mlp-binary-50", "conv-graded", "srnn"):
                lo, hi = args.cli_samples
                if name == "conv-graded":          # ~1,000 samples/s: the same seconds as the others
                    lo, hi = lo // 4, hi // 8
                r["cli"] = cli_marginal(net, tile(x, lo), tile(x, hi), folder, name)
            if not args.skip_lava:
                with CpuMonitor() as cpu:
                    m = args.lava_samples // (3 if name == "conv-graded" else 1)    # conv: ~5 samples/s
                    r["lava"] = lava_rate(net, x[:m], args.lava_warmup)
                r["lava"]["cpu"] = cpu.result
            results[name] = r
        print(f"[{time.perf_counter() - t_start:.0f} s] memory series", flush=True)
        netx_file(spk, folder / "mem.net")
        memory = []
        for m in args.memory_samples:
            x = (rng.random((m, T, *spk.input_shape)) < 0.2).astype(np.uint8)
            c = cli_run(folder / "mem.net", x, folder, f"mem{m}")
            c.pop("predictions")
            memory.append(c)
            del x
    finally:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()

    for r in results.values():
        lava = r.get("lava", {}).get("samples_per_s_steady")
        cli = r.get("cli", {}).get("marginal_samples_per_s")
        roof = r["roofline"]
        r["ratios"] = {
            "api_over_lava": r["api_samples_per_s"] / lava if lava else None,
            "cli_over_lava": cli / lava if lava and cli else None,
            "cli_over_api": cli / r["api_samples_per_s"] if cli else None,
            "torch_cpu_over_lava": r["torch_cpu_samples_per_s"] / lava if lava else None,
            "api_over_f32_roofline": r["api_samples_per_s"] / roof["samples_per_s_f32"],
            "api_over_int8_roofline": r["api_samples_per_s"] / roof["samples_per_s_int8"],
        }
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {"benchmark": "emulator_vs_lava", "date": now_iso(), "command": command_line(),
              "seconds": round(time.perf_counter() - t_start, 1), "machine": machine,
              "workloads": results, "simulate_memory": memory}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emulator_vs_lava.json").write_text(json.dumps(result, indent=1, default=_json))
    md = markdown(result)
    (args.out / "emulator_vs_lava.md").write_text(md)
    print(md)
    bad = [k for k, r in results.items() if "lava" in r and (r["lava"]["identical_output_spikes"] < 1.0
                                                          or r["lava"]["identical_layer_spike_counts"] < 1.0)]
    bad += [k for k, r in results.items() if not r["torch_cpu_equal_numpy"]
            or ("cli" in r and not r["cli"]["predictions_equal_api"])]
    if bad:
        print(f"ERROR: results disagree (a bug) in {bad}")
        return 1
    return 0


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _x(v, fmt="{:,.0f}×"):
    return "–" if v is None else fmt.format(v)


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# Emulator vs Lava on real spike traffic", "",
             f"One run of `{r['command']}` ({r['seconds']:.0f} s), {r['date']}, git {m['git']}.  ",
             f"Machine: {machine_line(m)}; load average at the end {m['load_average_end']}.  ",
             f"BLAS: {blas_line(m['blas'])}.  ",
             f"GPU: {m['cuda'] or 'none lent to this run (torch.cuda.is_available() is False): no CUDA figures'}.",
             "",
             "| workload | inputs | input / layer activity | emulator API samples/s | CLI marginal samples/s "
             "(CLI/API) | torch CPU samples/s | Lava steady samples/s | **API / Lava** | **CLI / Lava** | "
             "API / float32 GEMM roofline | API / int8 GEMM roofline |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, w in r["workloads"].items():
        ra, lava, cli = w["ratios"], w.get("lava"), w.get("cli")
        act = f"{100 * w['input_activity']:.1f}% / " + ", ".join(f"{100 * a:.1f}%" for a in w["layer_activity"])
        lines.append(
            f"| {name} | {w['inputs']} | {act} | {w['api_samples_per_s']:,.0f} | "
            + (f"{cli['marginal_samples_per_s']:,.0f} ({100 * ra['cli_over_api']:.0f}%)"
               if cli and cli["marginal_samples_per_s"] else "–")
            + f" | {w['torch_cpu_samples_per_s']:,.0f} | "
            + (f"{lava['samples_per_s_steady']:.1f}" if lava else "–")
            + f" | **{_x(ra['api_over_lava'])}** | **{_x(ra['cli_over_lava'])}** | "
            f"{ra['api_over_f32_roofline']:.2f}× | {ra['api_over_int8_roofline']:.2f}× |")
    lines += ["", "Rooflines: the samples/s the dense-equivalent GEMMs alone (what Lava computes: every layer, "
              "every one of the T + latency steps) would allow at this machine's measured float32 (numpy BLAS) "
              "and int8 (onnxruntime MatMulInteger) rates on the same shapes:", "",
              "| workload | MACs per sample | float32 roofline samples/s | int8 roofline samples/s | per layer "
              "(GFLOP/s f32, GOP/s int8) |", "|---|---:|---:|---:|---|"]
    for name, w in r["workloads"].items():
        ro = w["roofline"]
        lines.append(f"| {name} | {ro['macs_per_sample']:,} | {ro['samples_per_s_f32']:,.0f} | "
                     f"{ro['samples_per_s_int8']:,.0f} | "
                     + "; ".join(f"{x['gemm']}: {x['gflops_f32']}, {x['gops_int8']}" for x in ro["layers"]) + " |")
    lines += ["", "Accumulation paths the emulator chose (rows summed per path, last API run) and agreement:", ""]
    for name, w in r["workloads"].items():
        lava = w.get("lava")
        agree = "no Lava run" if not lava else (
            f"emulator == Lava on {lava['samples']} samples: output spikes {100 * lava['identical_output_spikes']:.0f}%, "
            f"layer spike counts {100 * lava['identical_layer_spike_counts']:.0f}% ({lava['lava_spikes']:,} spikes)")
        extra = f"; torch CPU == numpy: {'yes' if w['torch_cpu_equal_numpy'] else 'NO'}"
        if "cli" in w:
            extra += f"; CLI predictions == API: {'yes' if w['cli']['predictions_equal_api'] else 'NO'}, " \
                     f"start-up {w['cli']['startup_seconds']:.2f} s" + ("" if w["cli"]["netx_exact"] else
                     " (netx holds this network rescaled, as `export` writes it; the CLI runs that file)")
        lines.append(f"- **{name}**: {agree}{extra}.  ")
        lines += [f"  {p}  " for p in w["paths"]]
    lines += ["", "Peak memory of `neurodeploy simulate --backend emulator` (peak RSS of the process, wait4) "
              "against the number of samples (mlp-binary-20 inputs in a memory-mapped uint8 .npy, streamed):", "",
              "| samples | input file MiB | peak RSS MiB | seconds |", "|---:|---:|---:|---:|"]
    for c in r["simulate_memory"]:
        lines.append(f"| {c['samples']:,} | {c['input_mib']} | {c['peak_rss_mib']} | {c['seconds']:.2f} |")
    lines += ["", "CPU use during the API blocks (own cores / other processes' cores): "
              + ", ".join(f"{k} {w['api_cpu']['own_cores']}/{w['api_cpu']['others_busy_cores']}"
                          for k, w in r["workloads"].items()), ""]
    return "\n".join(lines)


def blas_line(b: dict) -> str:
    pools = b.get("threadpools")
    if isinstance(pools, list):
        desc = "; ".join(f"{'numpy: ' if p.get('numpy_uses_it') else 'also loaded: '}{p['internal_api']} "
                         f"{p['version']} ({p.get('architecture')} kernels, {p['num_threads']} threads)"
                         for p in sorted(pools, key=lambda p: not p.get("numpy_uses_it"))
                         if p["user_api"] == "blas")
    else:
        desc = str(pools)
    return f"numpy {b['numpy']}, {desc}" + "".join(f"; {k} {b[k]}" for k in ("lava-nc", "numba", "onnxruntime")
                                                   if k in b)


if __name__ == "__main__":
    raise SystemExit(main())
