"""The LightningModule: any registered network, weighted BCE / cross-entropy, epoch metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, MinMetric

from cxrnet.evaluation.metrics import classification_metrics
from cxrnet.models.adapt import classifier_name
from cxrnet.models.registry import create_model
from cxrnet.models.weights import load_weights

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]

STAGES = ("train", "val", "test")


class ClassifierModule(LightningModule):
    """Classifies chest films with ``net`` (a registry name plus its arguments).

    ``net`` may also hold ``weights`` (a local weights file, see ``models.weights``) and
    ``freeze_backbone_epochs`` (train only the head for that many first epochs).
    ``channels_last`` stores activations NHWC, which oneDNN's CPU convolutions and tensor cores
    run faster (experiments/benchmarks/README.md); ``compile`` wraps the network in
    ``torch.compile``. Neither changes the state dict, so checkpoints load either way.

    Binary tasks use one logit and BCE; more classes use softmax and cross-entropy. Class weights,
    when given, weight each sample's loss by its true class, as Keras' ``class_weight`` does.
    Metrics are torchmetrics objects accumulated over the whole epoch, never batch averages.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_monitor: str = "val/loss",
        class_names: Sequence[str] = ("NORMAL", "PNEUMONIA"),
        class_weights: Sequence[float] | None = None,
        monitor: str = "val/auroc",
        monitor_mode: str = "max",
        threshold: float = 0.5,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        if self.num_classes < 2:
            raise ValueError(f"need at least two classes, got {list(class_names)}")
        net_kwargs = dict(net)
        name = net_kwargs.pop("name")
        weights = net_kwargs.pop("weights", None)
        net_kwargs.pop("initial_weights", None)  # a record only (see on_save_checkpoint)
        self.freeze_backbone_epochs = int(net_kwargs.pop("freeze_backbone_epochs", 0) or 0)
        net_kwargs["num_outputs"] = 1 if self.num_classes == 2 else self.num_classes
        self.net = create_model(name, **net_kwargs)
        if weights:
            load_weights(self.net, weights)
        self.head_name = classifier_name(self.net)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        if compile:
            self.net.compile()  # in place: parameter names (and checkpoints) stay unprefixed
        if class_weights is not None and len(class_weights) != self.num_classes:
            raise ValueError(
                f"class_weights has {len(class_weights)} entries for {self.num_classes} classes"
            )
        self.register_buffer(
            "class_weights",
            torch.ones(self.num_classes)
            if class_weights is None
            else torch.tensor([float(w) for w in class_weights]),
        )
        # Keyed "<stage>_": a bare "train" would clash with nn.Module.train.
        # Probabilities and targets come from this module, so torchmetrics' input checks (a host
        # synchronisation per update each) are skipped. The loss means keep their NaN check: it
        # is what fails a diverged run outside a search (one check per step, on the value the
        # progress bar synchronises on anyway).
        self.metrics = torch.nn.ModuleDict(
            {
                f"{s}_": classification_metrics(self.num_classes, threshold, validate_args=False)
                for s in STAGES
            }
        )
        self.losses = torch.nn.ModuleDict({f"{s}_": MeanMetric() for s in STAGES})
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
        self.best_val = MaxMetric() if monitor_mode == "max" else MinMetric()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The checkpoint's state dict already holds the loaded weights: a model rebuilt from its
        # hyperparameters (cxrnet-eval) must not need the original weights file again.
        net = checkpoint.get("hyper_parameters", {}).get("net")
        if isinstance(net, Mapping) and net.get("weights"):
            checkpoint["hyper_parameters"]["net"] = {
                **net,
                "weights": None,
                "initial_weights": str(net["weights"]),
            }

    def on_train_epoch_start(self) -> None:
        if self.freeze_backbone_epochs > 0:
            set_backbone_trainable(
                self.net, self.head_name, self.current_epoch >= self.freeze_backbone_epochs
            )

    def probabilities(self, logits: Tensor) -> Tensor:
        """Pneumonia probability (binary) or class probabilities (multiclass)."""
        if self.num_classes == 2:
            return torch.sigmoid(logits.squeeze(-1))
        return torch.softmax(logits, dim=-1)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.num_classes == 2:
            per_sample = F.binary_cross_entropy_with_logits(
                logits.squeeze(-1), targets.float(), reduction="none"
            )
        else:
            per_sample = F.cross_entropy(logits, targets, reduction="none")
        return (per_sample * self.class_weights[targets]).mean()

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.loss(logits, targets)
        self.losses[f"{stage}_"].update(loss.detach(), weight=targets.numel())
        self.metrics[f"{stage}_"].update(self.probabilities(logits.detach()), targets)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self.log("train/loss_step", loss, prog_bar=True, batch_size=batch[1].numel())
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.probabilities(self(batch[0]))

    def compute_epoch_metrics(self, stage: str) -> dict[str, float]:
        """Metrics over every sample seen this epoch, then reset for the next one."""
        values: dict[str, float] = {f"{stage}/loss": float(self.losses[f"{stage}_"].compute())}
        for name, value in self.metrics[f"{stage}_"].compute().items():
            if value.ndim == 0:
                values[f"{stage}/{name}"] = float(value)
            else:  # per-class recall, named by class
                for class_name, per_class in zip(self.class_names, value, strict=True):
                    values[f"{stage}/recall_{class_name.lower()}"] = float(per_class)
        self.losses[f"{stage}_"].reset()
        self.metrics[f"{stage}_"].reset()
        return values

    def _log_epoch(self, stage: str) -> dict[str, float]:
        values = self.compute_epoch_metrics(stage)
        self.log_dict(values, prog_bar=stage == "val", sync_dist=False)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        if self.trainer.sanity_checking:
            return
        monitor = self.hparams.monitor
        if monitor not in values:
            raise KeyError(
                f"monitor {monitor!r} is not a logged metric; choose from {sorted(values)}"
            )
        self.best_val.update(torch.tensor(values[monitor]))
        self.log(f"{monitor}_best", self.best_val.compute(), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.hparams.scheduler(optimizer=optimizer),
                "monitor": self.hparams.scheduler_monitor,
                "interval": "epoch",
                "frequency": 1,
            },
        }


def set_backbone_trainable(net: torch.nn.Module, head_name: str, trainable: bool) -> None:
    """Freeze or unfreeze every parameter outside the head; frozen ones get no gradient, so the
    optimizer skips them."""
    for name, parameter in net.named_parameters():
        if not name.startswith(f"{head_name}."):
            parameter.requires_grad_(trainable)
