"""What the machine computes natively, and the training precision ``auto`` makes of it.

bfloat16 autocast (with channels-last) is the largest single speed-up of a training step where
the hardware computes bf16 itself: CPUs with AVX512-BF16 or AMX, and CUDA GPUs that support it
(experiments/benchmarks/README.md, "Training speed"). Elsewhere bf16 is emulated, slower than
float32, so ``trainer.precision: auto`` is ``bf16-mixed`` only where it is native.

Lightning has no ``auto`` precision: training, search trials and evaluation resolve it with
``resolve_trainer_precision`` before building a Trainer, for the accelerator that Trainer will
pick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from omegaconf import DictConfig

# A Lightning precision as configured: "32-true", "bf16-mixed", 32, ... or unset.
Precision = str | int | None

AUTO_PRECISION = "auto"
NATIVE_PRECISION = "bf16-mixed"
FALLBACK_PRECISION = "32-true"
# The CPU features torch can report (``torch.cpu._is_<name>_supported``), for benchmark tables.
CPU_FEATURES = ("avx2", "avx512", "avx512_bf16", "vnni", "amx_tile", "amx_fp16")
# Any one of these computes bf16 matrix products in hardware.
_CPU_BF16_FEATURES = ("avx512_bf16", "amx_tile")
_ACCELERATOR_CLASSES = {
    "CPUAccelerator": "cpu",
    "CUDAAccelerator": "cuda",
    "MPSAccelerator": "mps",
    "XLAAccelerator": "tpu",
}


def cpu_features() -> dict[str, bool]:
    """Which of ``CPU_FEATURES`` this CPU has (False where torch cannot tell)."""
    return {
        name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
        for name in CPU_FEATURES
    }


def native_bf16(device: str) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``mps``, ...) computes bfloat16 in hardware."""
    if device == "cuda":
        # is_bf16_supported() asks the current device, which needs one to exist.
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device == "cpu":
        features = cpu_features()
        return any(features[name] for name in _CPU_BF16_FEATURES)
    return False  # MPS, XLA and others: not measured here, so float32


def run_device(accelerator: object) -> str:
    """The kind of device a Lightning Trainer given ``accelerator`` trains on.

    ``auto`` and ``gpu`` are resolved in Lightning's own order (TPU, then MPS, then CUDA, then
    CPU for ``auto``; MPS before CUDA for ``gpu``), so the precision is chosen for the device
    the run really uses. An Accelerator object is named by its class.
    """
    from lightning.pytorch.accelerators import MPSAccelerator, XLAAccelerator

    if not isinstance(accelerator, str):
        name = type(accelerator).__name__
        return _ACCELERATOR_CLASSES.get(name, name.removesuffix("Accelerator").lower())
    choice = accelerator.lower()
    if choice == "auto":
        if XLAAccelerator.is_available():
            return "tpu"
        choice = "gpu" if MPSAccelerator.is_available() or torch.cuda.is_available() else "cpu"
    if choice == "gpu":
        return "mps" if MPSAccelerator.is_available() else "cuda"
    return choice


def auto_precision(device: str) -> str:
    """``bf16-mixed`` where ``device`` computes bf16 natively, else ``32-true``."""
    return NATIVE_PRECISION if native_bf16(device) else FALLBACK_PRECISION


def resolve_precision(precision: Precision, accelerator: object = "auto") -> Precision:
    """``auto`` becomes the precision for the device ``accelerator`` trains on; any other value
    (``32-true``, ``bf16-mixed``, ``16-mixed``, 32, ...) is returned unchanged for Lightning."""
    if precision != AUTO_PRECISION:
        return precision
    return auto_precision(run_device(accelerator))


def resolve_trainer_precision(cfg: DictConfig) -> Precision:
    """Replace ``trainer.precision: auto`` in ``cfg`` by what it means on the device the Trainer
    will use, saying so once; any other value is left as it is."""
    # Imported here: this module's detection is used where Lightning is not (benchmarks).
    from lightning.pytorch.utilities import rank_zero_only

    requested = cfg.trainer.get("precision")
    if requested != AUTO_PRECISION:
        return requested
    accelerator = cfg.trainer.get("accelerator", "auto")
    resolved = resolve_precision(requested, accelerator)
    cfg.trainer.precision = resolved
    # Every DDP rank resolves it alike (one machine, or nodes of one kind); rank 0 says so.
    if rank_zero_only.rank == 0:
        device = run_device(accelerator)
        native = "native" if native_bf16(device) else "no native"
        print(f"trainer.precision=auto: {resolved} ({native} bfloat16 on {device})", flush=True)
    return resolved
