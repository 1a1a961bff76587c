"""Inference benchmark: images per second at batch 64 on 2 CPU threads, seed CNN at 150 px.

    python experiments/benchmarks/bench_inference.py              # a few minutes on 2 cores
    python experiments/benchmarks/bench_inference.py --quick      # a smoke run, rough numbers

Paths, all returning the pneumonia probability of the same weights (random, seeded: speed does
not depend on what was learned):

- eager: NCHW float32, ``torch.inference_mode``, the way cxrnet-predict runs a checkpoint.
- channels_last: the same network and input in NHWC memory format.
- bn_folded: the last BatchNorm folded exactly into the first dense layer. Only that one folds
  exactly: the seed network normalises *after* ReLU (Keras order), so a BatchNorm meets the
  next convolution only through zero 'same' padding, where a fold would change border pixels.
  The max-pool between them commutes with the affine map only for positive scales (checked).
- compiled: ``torch.compile`` (inductor) of the folded, channels-last network.
- onnxruntime: the ``cxrnet-export`` ONNX file in ONNX Runtime (2 intra-op threads, all
  graph optimisations), the deployment path without Lightning or Hydra.

Each row also gives the largest probability difference from eager on the same batch. Prints a
markdown table and writes JSON to ``--out``. Other work on the same cores slows every row; the
load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # experiments/benchmarks/machine.py, beside this script
from torch import nn

from cxrnet.data.decode import DecodeParams
from cxrnet.inference.export import ProbabilityNet, export_onnx
from cxrnet.inference.model import InferenceModel
from cxrnet.models.notebook_cnn import NotebookCNN

HERE = Path(__file__).resolve().parent


def fold_last_batchnorm(net: NotebookCNN) -> NotebookCNN:
    """A copy of ``net`` with its last BatchNorm (before flatten and dense) folded into the dense
    layer: Linear(a*z + b) = (W a) z + (W b + c). Exact in real arithmetic."""
    folded = copy.deepcopy(net).eval()
    last_block = folded.features[-1]
    bn, pool = last_block[2], last_block[3]
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(pool, nn.MaxPool2d)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    if not bool(torch.all(scale > 0)):
        return folded  # max-pool(a x + b) = a max-pool(x) + b needs a > 0; leave it unfolded
    linear = folded.head[1]
    side = linear.in_features // scale.numel()
    per_feature_scale = scale.repeat_interleave(side)
    per_feature_shift = shift.repeat_interleave(side)
    with torch.no_grad():
        linear.bias += linear.weight @ per_feature_shift
        linear.weight *= per_feature_scale
    last_block[2] = nn.Identity()
    return folded


def trained_like(size: int, seed: int = 0) -> NotebookCNN:
    """Seeded random weights with non-trivial BatchNorm statistics (positive scales)."""
    torch.manual_seed(seed)
    net = NotebookCNN(image_size=size)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def rate(fn: Callable[[], object], batch: int, batches: int, rounds: int) -> dict:
    fn()  # warm-up (allocations, lazy initialisation)
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batches):
            fn()
        per_round.append(batch * batches / (time.perf_counter() - start))
    return {"images_per_s": statistics.median(per_round), "rounds": per_round}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "bench_inference.json")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds = 2, 2
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]

    net = trained_like(args.size)
    wrapped = ProbabilityNet(net).eval()
    images = torch.rand(args.batch, 1, args.size, args.size)
    with torch.inference_mode():
        reference = wrapped(images).numpy()
    rows: dict[str, dict] = {}

    def torch_path(name: str, model: nn.Module, batch: torch.Tensor, note: str) -> None:
        def call() -> np.ndarray:
            with torch.inference_mode():
                return model(batch).float().numpy()

        result = rate(call, args.batch, args.batches, args.rounds)
        result["max_abs_diff"] = float(np.max(np.abs(call() - reference)))
        result["note"] = note
        rows[name] = result
        print(f"{name}: {result['images_per_s']:.0f} images/s", flush=True)

    torch_path("eager", wrapped, images, "NCHW float32")
    channels_last = copy.deepcopy(wrapped).to(memory_format=torch.channels_last)
    nhwc = images.contiguous(memory_format=torch.channels_last)
    torch_path("channels_last", channels_last, nhwc, "NHWC float32")
    folded = ProbabilityNet(fold_last_batchnorm(net)).eval()
    torch_path("bn_folded", folded, images, "last BatchNorm folded into the dense layer")
    if not args.no_compile:
        compiled_source = copy.deepcopy(folded).to(memory_format=torch.channels_last)
        start = time.perf_counter()
        compiled = torch.compile(compiled_source)
        with torch.inference_mode():
            compiled(nhwc)
        seconds = time.perf_counter() - start
        torch_path("compiled", compiled, nhwc, f"torch.compile, {seconds:.0f} s to compile")

    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: pip install 'cxrnet[onnx]'", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "seed.onnx"
            model = InferenceModel(net, DecodeParams(args.size), None, ("N", "P"), {})
            export_onnx(model, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: images.numpy()}

            def call_ort() -> np.ndarray:
                return session.run(None, feed)[0]

            result = rate(call_ort, args.batch, args.batches, args.rounds)
            result["max_abs_diff"] = float(np.max(np.abs(call_ort() - reference)))
            result["note"] = f"onnxruntime {ort.__version__}, exported file"
            rows["onnxruntime"] = result
            print(f"onnxruntime: {result['images_per_s']:.0f} images/s", flush=True)

    eager = rows["eager"]["images_per_s"]
    for row in rows.values():
        row["speedup"] = row["images_per_s"] / eager
    results = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": cpu_name(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_at_start": load_start,
            "load_average_at_end": os.getloadavg()[0],
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    print()
    print(
        f"Seed CNN, {args.size} px, batch {args.batch}, {args.threads} threads; load average "
        f"{load_start:.1f} at start, {results['machine']['load_average_at_end']:.1f} at end"
    )
    print()
    print("| path | images/s | x eager | max abs diff vs eager | note |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, row in rows.items():
        print(
            f"| {name} | {row['images_per_s']:.0f} | {row['speedup']:.2f} | "
            f"{row['max_abs_diff']:.1e} | {row['note']} |"
        )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
