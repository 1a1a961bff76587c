"""Training speed: a hand-written PyTorch loop, its best settings, and cxrnet-train end to end.

    python experiments/benchmarks/bench_train.py                 # 3 interleaved repetitions
    python experiments/benchmarks/bench_train.py --quick         # a smoke run, rough numbers
    python experiments/benchmarks/bench_train.py --device cuda   # the same on a GPU

The notebook CNN, 150 px, batch 32, Adam 1e-3, BCE, on the real training images (decoded once):

(a) a hand-written loop, NCHW float32, eager, on tensors already in memory;
(b) the same loop with each candidate setting (channels-last, bfloat16 autocast where the device
    runs it natively, torch.compile); the fastest whose first losses agree with (a) is "best";
(c) ``cxrnet-train`` as a user runs it (Trainer, cache, augmentation in loader workers, metrics,
    CSV logging, checkpoints): the marginal rate between a short and a long run, so start-up,
    validation and testing cancel out, plus the whole run's wall time;
(d) the seed's Keras pipeline (``keras_seed.py`` beside this script: the notebook's network,
    ``ImageDataGenerator`` and ``model.fit``) on the same films, where an interpreter with
    TensorFlow is at hand: this one (``pip install -e '.[bench]'``) or ``--keras-python``.
    TensorFlow is never a dependency of cxrnet itself.

Every contender runs in its own process (peak resident memory is that process's), ``--reps``
times, interleaved; the table shows medians. Then one row per network of the registry at 128 px.
Prints markdown tables and writes everything to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_name, shared_data  # experiments/benchmarks/machine.py, beside this script

from cxrnet.hardware import cpu_features, native_bf16

DEFAULT_DATA = shared_data()
BATCH = 32
SIZE = 150
NETWORK_SIZE = 128
NETWORKS = (
    "notebook_cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "convnext_tiny",
)
# (channels_last, autocast dtype or None, torch.compile)
VARIANTS: dict[str, tuple[bool, str | None, bool]] = {
    "NCHW fp32 (a)": (False, None, False),
    "channels-last fp32": (True, None, False),
    "NCHW bf16 autocast": (False, "bfloat16", False),
    "channels-last bf16 autocast": (True, "bfloat16", False),
    "channels-last fp32 + compile": (True, None, True),
    "channels-last bf16 autocast + compile": (True, "bfloat16", True),
}
# Agreement of (b) with (a): the initial network's loss on the first batch in eval mode (dropout
# masks differ between eager and compiled code, so training-mode losses would not compare), within
# the precision used.
LOSS_TOLERANCE = {None: 1e-4, "bfloat16": 2e-2, "float16": 2e-2}


# ------------------------------------------------------------------------------ the machine


def machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_features": cpu_features(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ------------------------------------------------------------------------- (a), (b): hand loop


def training_arrays(data: Path, count: int | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` (None: all) real training films, uint8, both classes shuffled, and their labels."""
    from cxrnet.data.cache import load_images
    from cxrnet.data.decode import DecodeParams
    from cxrnet.data.discovery import list_images
    from cxrnet.data.records import CLASS_NAMES, make_record

    records = [
        make_record(path, label, "train")
        for label, name in enumerate(CLASS_NAMES)
        for path in list_images(data / "train" / name)
    ]
    order = np.random.default_rng(0).permutation(len(records))[:count]
    chosen = [records[i] for i in sorted(order)]
    cache = Path(os.environ.get("CXRNET_CACHE_DIR", Path.home() / ".cache" / "cxrnet")) / "images"
    loaded = load_images(chosen, DecodeParams(size), cache_dir=cache, progress=False)
    # Back in the shuffled order: sorted, the first batches would hold one class only.
    position = {index: rank for rank, index in enumerate(order)}
    by_rank = np.argsort([position[i] for i in sorted(order)])
    labels = np.array([r.label for r in loaded.records], dtype=np.float32)
    return np.ascontiguousarray(loaded.images[by_rank]), labels[by_rank]


def training_images(data: Path, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` real training films as float tensors in memory, both classes shuffled."""
    images, labels = training_arrays(data, count, size)
    return torch.from_numpy(images).unsqueeze(1).float().div_(255), torch.from_numpy(labels)


def hand_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """One contender in this process: warm-up steps, then timed steps; losses and rate."""
    from cxrnet.models import create_model

    channels_last, dtype, compiled = spec["variant"]
    device = spec["device"]
    size = spec["size"]
    steps, warmup = spec["steps"], spec["warmup"]
    images, labels = training_images(Path(spec["data"]), BATCH * (steps + warmup), size)
    images, labels = images.to(device), labels.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    kwargs = {"image_size": size} if spec["net"] == "notebook_cnn" else {}
    model = create_model(spec["net"], num_outputs=1, **kwargs).to(
        device, memory_format=memory_format
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compiled else model
    autocast = (
        torch.autocast(device_type=device, dtype=getattr(torch, dtype))
        if dtype
        else contextlib.nullcontext()
    )

    model.eval()
    with torch.no_grad(), autocast:
        x = images[:BATCH].contiguous(memory_format=memory_format)
        initial = F.binary_cross_entropy_with_logits(forward(x).squeeze(-1).float(), labels[:BATCH])
    model.train()

    def step(i: int) -> torch.Tensor:
        batch = slice(i * BATCH, (i + 1) * BATCH)
        x = images[batch].contiguous(memory_format=memory_format)
        with autocast:
            loss = F.binary_cross_entropy_with_logits(forward(x).squeeze(-1).float(), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    losses = [step(i) for i in range(warmup)]
    sync()
    start = time.perf_counter()
    losses += [step(warmup + i) for i in range(steps)]
    sync()
    seconds = time.perf_counter() - start
    return {
        "images_per_s": steps * BATCH / seconds,
        "initial_loss": float(initial),
        "losses": [float(x) for x in losses],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def json_worker(command: list[str], what: str) -> dict[str, Any]:
    """Run a worker process; its result is the JSON object on its last line of output."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    return json_worker([sys.executable, __file__, "--worker", json.dumps(spec)], f"worker {spec}")


# ------------------------------------------------------------------------- (c): cxrnet-train


def cxrnet_train(data: Path, batches: int, device: str, extra: list[str], work: Path) -> dict:
    """One ``cxrnet-train`` run of ``batches`` training batches: wall time and peak memory."""
    script = Path(sys.executable).with_name("cxrnet-train")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cxrnet.cli.train"]
    command += [
        f"data.root={data}",
        "experiment=notebook_baseline",
        "trainer.max_epochs=1",
        f"++trainer.limit_train_batches={batches}",
        f"paths.log_dir={work / 'logs'}",
        f"paths.cache_dir={work / 'cache'}",
        *(["trainer=gpu"] if device == "cuda" else []),
        *extra,
    ]
    env = os.environ | {"WANDB_MODE": "offline"}
    log = work / "cxrnet-train.log"
    start = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        # wait4, not wait: this child's own peak RSS (its largest process, loader workers
        # included), where RUSAGE_CHILDREN would be a maximum over every child so far.
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"cxrnet-train failed ({process.returncode}):\n{tail}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


# --------------------------------------------------------------------------- (d): the seed's Keras


def keras_python(requested: str | None) -> str | None:
    """The interpreter for row (d): the one asked for, else this one if it has TensorFlow."""
    if requested:
        return requested
    return sys.executable if importlib.util.find_spec("tensorflow") is not None else None


def write_keras_inputs(data: Path, work: Path) -> tuple[Path, Path]:
    """Every training film at 150 px, all in memory as the notebook holds them (keras_seed.py)."""
    images, labels = training_arrays(data, None, SIZE)
    paths = work / "keras_images.npy", work / "keras_labels.npy"
    np.save(paths[0], images)
    np.save(paths[1], labels)
    return paths


def keras_seed(python: str, inputs: tuple[Path, Path], args: argparse.Namespace) -> dict:
    plan = {"short": args.cli_short, "long": args.cli_long, "warmup": args.warmup}
    plan["bare"] = args.steps
    script = Path(__file__).with_name("keras_seed.py")
    command = [python, str(script), str(inputs[0]), str(inputs[1]), json.dumps(plan)]
    return json_worker(command, f"keras_seed.py under {python}")


# ------------------------------------------------------------------------------ the benchmark


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    # bf16 autocast only pays off where the hardware computes in bf16 (else it emulates).
    low_precision = native_bf16(device)
    variants = {
        name: v for name, v in VARIANTS.items() if v[1] is None or low_precision or args.all
    }
    if args.no_compile:
        variants = {name: v for name, v in variants.items() if not v[2]}
    common = {"device": device, "data": str(args.data), "steps": args.steps, "warmup": args.warmup}
    results: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(device),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "loop": {name: [] for name in variants},
        "networks": {},
        "keras_python": keras_python(args.keras_python),
        "keras": [],
    }
    cli_runs: dict[str, list[str]] = {"default settings (c)": []}
    if low_precision:
        # What trainer.precision=auto resolves to here (bf16-mixed): the switch a user types.
        cli_runs["trainer.precision=auto"] = ["trainer.precision=auto"]
    # No torch.compile row here: compiling takes tens of seconds on 2 cores and varies more
    # between the short and the long run than the extra batches take, so the marginal rate is
    # meaningless for it; the hand loop's compile rows show its steady-state effect.
    results["cli"] = {
        name: {
            "short": [],
            "long": [],
            "short_batches": args.cli_short,
            "long_batches": args.cli_long,
        }
        for name in cli_runs
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        python = results["keras_python"]
        inputs = write_keras_inputs(args.data, work) if python and not args.skip_keras else None
        for rep in range(args.reps):
            for name, variant in variants.items():
                spec = common | {"variant": variant, "net": "notebook_cnn", "size": SIZE}
                results["loop"][name].append(in_subprocess(spec))
                save(results, args.out)
                print(f"rep {rep}: {name}: {results['loop'][name][-1]['images_per_s']:.1f} img/s")
            for name, extra in {} if args.skip_cli else cli_runs.items():
                for length, batches in (("short", args.cli_short), ("long", args.cli_long)):
                    measured = cxrnet_train(args.data, batches, device, extra, work)
                    results["cli"][name][length].append(measured)
                    save(results, args.out)
                print(f"rep {rep}: cxrnet-train {name}: {cli_rate(results['cli'][name]):.1f} img/s")
            if inputs is not None:
                results["keras"].append(keras_seed(python, inputs, args))
                save(results, args.out)
                rate = results["keras"][-1]["images_per_s"]
                print(f"rep {rep}: seed Keras pipeline: {rate:.1f} img/s")
            if rep == 0 and not args.skip_networks:
                # After the first repetition, so that an interrupted run still has every row.
                networks(args, common, variants, results)
    return results


def networks(
    args: argparse.Namespace, common: dict, variants: dict, results: dict[str, Any]
) -> None:
    best = args.network_variant or best_variant(results["loop"])
    for net in args.networks:
        row = {}
        for name in ("NCHW fp32 (a)", best):
            spec = common | {"variant": variants[name], "net": net, "size": NETWORK_SIZE}
            spec |= {"steps": args.network_steps, "warmup": 2}
            row[name] = in_subprocess(spec)
        results["networks"][net] = row
        save(results, args.out)
        print(f"{net}: " + ", ".join(f"{k} {v['images_per_s']:.1f}" for k, v in row.items()))


def save(results: dict[str, Any], out: Path) -> None:
    """Written after every measurement: an interrupted run keeps what it measured
    (``--report-only`` prints its tables)."""
    results.setdefault("load_samples", []).append(os.getloadavg()[0])
    out.write_text(json.dumps(results, indent=1) + "\n")


def agrees(result: list[dict], reference: list[dict], dtype: str | None) -> bool:
    return abs(result[0]["initial_loss"] - reference[0]["initial_loss"]) <= LOSS_TOLERANCE[dtype]


def best_variant(loop: dict[str, list[dict]]) -> str:
    reference = loop["NCHW fp32 (a)"]
    candidates = [name for name in loop if agrees(loop[name], reference, VARIANTS[name][1])]
    return max(candidates, key=lambda n: median([r["images_per_s"] for r in loop[n]]))


def cli_rate(runs: dict[str, list[dict]]) -> float:
    """Images per second between the short and the long run (per repetition, then median);
    NaN when a long run was not slower than its short one: the extra batches took less time than
    the runs' own noise (too few of them, e.g. --quick), so there is no rate to report."""
    extra_images = (runs["long_batches"] - runs["short_batches"]) * BATCH
    pairs = list(zip(runs["short"], runs["long"], strict=False))
    if any(long["seconds"] <= short["seconds"] for short, long in pairs):
        return float("nan")
    return median([extra_images / (long["seconds"] - short["seconds"]) for short, long in pairs])


# ---------------------------------------------------------------------------------- report


def verdict(value: float, target: float) -> str:
    return f"{value:.2f} (target >= {target:g}: {'met' if value >= target else 'NOT met'})"


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    settings = results["settings"]
    loads = results.get("load_samples") or [float("nan")]
    flags = ", ".join(k for k, v in m["cpu_features"].items() if v) or "none detected"
    loop = results["loop"]
    a_rate = median([r["images_per_s"] for r in loop["NCHW fp32 (a)"]])
    best = best_variant(loop)
    b_rate = median([r["images_per_s"] for r in loop[best]])
    lines = [
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"capability {m['cpu_capability']}, instruction sets: {flags}"
        + (f"; GPU {m['gpu']}" if "gpu" in m else "")
        + f"; load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}"
        + f", 1-minute load during the run {min(loads):.1f}-{max(loads):.1f}",
        "",
        f"notebook CNN, {SIZE} px, batch {BATCH}, Adam, BCE; medians of "
        f"{len(loop['NCHW fp32 (a)'])} interleaved repetitions ({settings['steps']} timed steps "
        f"after {settings['warmup']} warm-up steps)",
        "",
        "| contender | img/s | vs (a) | initial loss, eval mode (diff from a) | peak RSS MB |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    ref_loss = loop["NCHW fp32 (a)"][0]["initial_loss"]
    for name, runs in loop.items():
        rate = median([r["images_per_s"] for r in runs])
        loss = runs[0]["initial_loss"]
        mark = " **(b) best**" if name == best else ""
        lines.append(
            f"| hand loop, {name}{mark} | {rate:.1f} | {rate / a_rate:.2f}x | "
            f"{loss:.5f} ({loss - ref_loss:+.1e}) | "
            f"{median([r['peak_rss_mb'] for r in runs]):.0f} |"
        )
    ratios = [f"(b)/(a) = {b_rate / a_rate:.2f}"]
    keras = results.get("keras") or []
    d_rate = median([r["images_per_s"] for r in keras]) if keras else float("nan")
    for name, runs in results["cli"].items():
        if not runs["long"]:
            continue
        rate = cli_rate(runs)
        whole = median([r["seconds"] for r in runs["long"]])
        if math.isnan(rate):
            lines.append(
                f"| cxrnet-train, {name} | not measured: the {runs['long_batches']}-batch run was "
                f"not slower than the {runs['short_batches']}-batch one (use more --cli-long) | | |"
                f" {max(r['peak_rss_mb'] for r in runs['long']):.0f} |"
            )
            ratios.append(f"(c)/(b) with {name}: not measured")
            continue
        lines.append(
            f"| cxrnet-train, {name} | {rate:.1f} | {rate / a_rate:.2f}x | whole run of "
            f"{runs['long_batches']} batches: {whole:.1f} s | "
            f"{max(r['peak_rss_mb'] for r in runs['long']):.0f} |"
        )
        ratios.append(f"(c)/(b) with {name}: {verdict(rate / b_rate, 0.9)}")
        if keras:
            ratios.append(f"(c)/(d) with {name}: {verdict(rate / d_rate, 1.5)}")
    if keras:
        bare = median([r["bare_images_per_s"] for r in keras])
        whole = median([r["fit_long_s"] for r in keras])
        rss = max(r["peak_rss_mb"] for r in keras)
        about = f"TensorFlow {keras[0]['tensorflow']}, {keras[0]['trainable_parameters']:,} weights"
        lines += [
            f"| seed Keras pipeline, ImageDataGenerator + model.fit (d) | {d_rate:.1f} | "
            f"{d_rate / a_rate:.2f}x | fit of {settings['cli_long']} batches: {whole:.1f} s | "
            f"{rss:.0f} |",
            f"| seed Keras network alone, train_on_batch | {bare:.1f} | {bare / a_rate:.2f}x | "
            f"{about} | {rss:.0f} |",
        ]
    else:
        lines.append(
            "| seed Keras pipeline (d) | not measured: no interpreter with TensorFlow (pip "
            "install -e '.[bench]', or --keras-python) | | | |"
        )
        ratios.append("(c)/(d): not measured (target >= 1.5)")
    lines += ["", *(f"- {r}" for r in ratios)]
    if results["networks"]:
        lines += [
            "",
            f"every network, {NETWORK_SIZE} px, batch {BATCH}, Adam, BCE, one run each "
            f"({settings['network_steps']} timed steps after 2 warm-up steps)",
            "",
            "| network | parameters | (a) NCHW fp32 img/s | other setting | img/s | vs (a) |",
            "| --- | ---: | ---: | --- | ---: | ---: |",
        ]
        for net, row in results["networks"].items():
            plain = row["NCHW fp32 (a)"]["images_per_s"]
            other = next((n for n in row if n != "NCHW fp32 (a)"), "NCHW fp32 (a)")
            rate = row[other]["images_per_s"]
            lines.append(
                f"| {net} | {parameters(net):,} | {plain:.1f} | {other} | {rate:.1f} | "
                f"{rate / plain:.2f}x |"
            )
    return "\n".join(lines)


def parameters(net: str) -> int:
    from cxrnet.models import count_trainable_parameters, create_model

    kwargs = {"image_size": NETWORK_SIZE} if net == "notebook_cnn" else {}
    return count_trainable_parameters(create_model(net, num_outputs=1, **kwargs))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cli-short", type=int, default=5, help="batches of the short run")
    parser.add_argument("--cli-long", type=int, default=55, help="batches of the long run")
    parser.add_argument("--network-steps", type=int, default=4)
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument(
        "--network-variant",
        choices=list(VARIANTS),
        help="the network rows' second setting (default: the loop's best); torch.compile of the "
        "large networks takes minutes on 2 cores",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--all", action="store_true", help="bf16 rows even without native bf16")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-networks", action="store_true")
    parser.add_argument("--skip-keras", action="store_true", help="no row (d)")
    parser.add_argument(
        "--keras-python",
        help="an interpreter with TensorFlow and scipy for row (d) (default: this one, if it has "
        "TensorFlow), e.g. a separate virtualenv's bin/python",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: rough numbers")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_train.json"))
    parser.add_argument("--report-only", action="store_true", help="tables from --out's JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.steps, args.warmup, args.network_steps = 1, 4, 1, 1
        args.cli_short, args.cli_long = 2, 6
    if args.device == "cuda":  # a GPU eats batches of 32 fast: time more of them
        args.steps, args.cli_long = max(args.steps, 200), max(args.cli_long, 160)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        spec = json.loads(args.worker)
        spec["variant"] = tuple(spec["variant"])
        print(json.dumps(hand_loop(spec)))
        return
    if args.report_only:
        results = json.loads(args.out.read_text())
        print(report(results))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    if not (args.data / "train").is_dir():
        raise SystemExit(f"{args.data}/train not found; pass --data <folder with train/>")
    results = run(args)
    text = report(results)
    print("\n" + text)
    results["report"] = text
    save(results, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
