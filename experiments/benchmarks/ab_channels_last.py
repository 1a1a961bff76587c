"""Paired A/B: NCHW against channels-last float32, the notebook CNN, 150 px, batch 32, Adam, BCE.

    python experiments/benchmarks/ab_channels_last.py

Both models live in one process and take turns (2 steps each, order alternating per round), so
a busy machine slows both alike; the per-round ratio is the number to read, not the rates.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from cxrnet.models import create_model

ROUNDS = 8
STEPS = 2


def main() -> None:
    torch.manual_seed(0)
    images = torch.rand(32, 1, 150, 150)
    targets = torch.randint(0, 2, (32,)).float()
    contenders = {}
    for name, layout in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
        torch.manual_seed(0)
        model = create_model("notebook_cnn").to(memory_format=layout)
        contenders[name] = (model, torch.optim.Adam(model.parameters(), 1e-3), layout)

    def step(name: str) -> None:
        model, optimizer, layout = contenders[name]
        logits = model(images.contiguous(memory_format=layout)).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for name in contenders:  # warm-up: oneDNN picks and caches its kernels
        for _ in range(STEPS):
            step(name)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    for round_ in range(ROUNDS):
        for name in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(STEPS):
                step(name)
            rates[name].append(STEPS * 32 / (time.perf_counter() - start))
    ratios = [c / a for a, c in zip(rates["NCHW"], rates["channels-last"], strict=True)]
    print("| layout | median img/s |\n| --- | ---: |")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    print(
        f"\nchannels-last / NCHW per round: median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}-{max(ratios):.2f} over {ROUNDS} rounds"
    )


if __name__ == "__main__":
    main()
