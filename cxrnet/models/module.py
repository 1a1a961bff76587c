"""The LightningModule: any registered network, weighted BCE / cross-entropy, epoch metrics.

Its optimizer, LR scheduler and backbone freezing are built by ``cxrnet.models.optimization``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MaxMetric, MinMetric, SumMetric

from cxrnet.evaluation.finding_metrics import MIN_POSITIVES, FindingPredictions, finding_values
from cxrnet.evaluation.metric_names import (
    check_source_monitor,
    finding_metric_names,
    per_source_names,
)
from cxrnet.evaluation.metrics import (
    WeightedMean,
    classification_metrics,
    epoch_metric_names,
    metric_states,
    monitor_mode_for,
    restore_metric_states,
)
from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD, pneumonia_probability
from cxrnet.evaluation.source_metrics import SourcePredictions, source_values
from cxrnet.models.adapt import classifier_name
from cxrnet.models.losses import (
    batch_loss,
    class_loss,
    class_weight_tensor,
    finding_loss,
    finding_weight_tensor,
)
from cxrnet.models.optimization import (
    ComponentConfig,
    component_config,
    keep_backbone_statistics,
    optimizer_settings,
    set_backbone_trainable,
)
from cxrnet.models.registry import create_model
from cxrnet.models.weights import load_weights
from cxrnet.plain_data import plain_data
from cxrnet.user_errors import ConfigError

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")
# Where a checkpoint keeps the best monitored validation score reached so far.
BEST_VAL_KEY = "cxrnet_best_val"
# Where a checkpoint written in the middle of an epoch keeps that epoch's training metric states.
TRAIN_EPOCH_KEY = "cxrnet_train_epoch_metrics"


class ClassifierModule(LightningModule):
    """Classifies chest films with ``net`` (a registry name plus its arguments).

    ``net`` may also hold ``weights`` (a local weights file, see ``models.weights``) and
    ``freeze_backbone_epochs`` (train only the head for that many first epochs);
    ``freeze_backbone`` trains only the head throughout (fine-tuning, ``experiment=finetune``):
    the backbone is every parameter outside the network's last Linear layer, and its
    normalisation layers keep their running statistics (they stay in eval mode).
    ``val_sources`` names the sources the val films come from (``ChestXRayDataModule
    .val_sources``): the val loader then yields each film's source index and the module logs
    ``val/<metric>/<source>`` and ``val/<metric>/worst`` (``evaluation.source_metrics``).
    ``channels_last`` stores activations NHWC, which oneDNN's CPU convolutions and tensor cores
    run faster (experiments/benchmarks/README.md); ``compile`` wraps the network in
    ``torch.compile``. Neither changes the state dict, so checkpoints load either way.

    Binary tasks use one logit and BCE, more classes softmax and cross-entropy, findings one
    sigmoid per finding with a masked BCE (``cxrnet.models.losses``, with the class weights).
    Metrics are torchmetrics objects accumulated over the whole epoch, never batch averages.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: ComponentConfig,
        scheduler: ComponentConfig | None = None,
        scheduler_monitor: str = "val/loss",
        class_names: Sequence[str] = ("NORMAL", "PNEUMONIA"),
        class_weights: Sequence[float] | None = None,
        monitor: str = "val/auroc",
        monitor_mode: str | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        channels_last: bool = False,
        compile: bool = False,
        label_smoothing: float = 0.0,
        freeze_backbone: bool = False,
        val_sources: Sequence[str] = (),
        findings: Sequence[str] = (),
        finding_weights: Sequence[Sequence[float]] | None = None,
        min_finding_positives: int = MIN_POSITIVES,
    ) -> None:
        super().__init__()
        # Plain data before save_hyperparameters reads these arguments: the checkpoint then loads
        # with weights_only=True (cxrnet.models.checkpoint).
        net = plain_data(net)
        optimizer = component_config(optimizer)
        scheduler = None if scheduler is None else component_config(scheduler)
        class_names = plain_data(class_names)
        class_weights = None if class_weights is None else plain_data(class_weights)
        val_sources = [str(source) for source in val_sources]
        findings = [str(name) for name in findings]
        finding_weights = None if finding_weights is None else plain_data(finding_weights)
        if findings and val_sources:
            # Not built yet: a findings model's per-source numbers are report.md's (per finding).
            log.info("data.task=findings logs no per-source val metrics; report.md has them")
            val_sources = []
        self.save_hyperparameters(logger=False)
        self.findings = tuple(findings)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        if self.num_classes < 2:
            raise ValueError(f"need at least two classes, got {list(class_names)}")
        self._build_net(net, channels_last=channels_last, compile=compile)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.register_buffer(
            "class_weights",
            finding_weight_tensor(finding_weights, len(self.findings))
            if self.findings
            else class_weight_tensor(class_weights, self.num_classes),
        )
        self._add_epoch_metrics(threshold)
        self.val_sources = tuple(val_sources)
        self.source_predictions = SourcePredictions() if self.val_sources else None
        check_source_monitor(monitor, self.val_sources)
        choices = (
            finding_metric_names("val", self.findings)
            if self.findings
            else epoch_metric_names("val", self.class_names)
            + per_source_names("val", self.val_sources)
        )
        if monitor not in choices:
            raise ConfigError(
                f"monitor={monitor!r} is not a logged metric; choose one of {choices}"
            )
        self.monitor_mode = monitor_mode_for(monitor, monitor_mode)
        self.best_val = MaxMetric() if self.monitor_mode == "max" else MinMetric()
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            if self.freeze_backbone_epochs:
                raise ConfigError(
                    "model.freeze_backbone=true trains only the head throughout; "
                    f"model.net.freeze_backbone_epochs={self.freeze_backbone_epochs} would "
                    "unfreeze it: set one of them"
                )
            set_backbone_trainable(self.net, self.head_name, False)

    def _build_net(self, net: Mapping[str, Any], *, channels_last: bool, compile: bool) -> None:
        """``self.net`` from its registry name and arguments, its weights file loaded."""
        net_kwargs = dict(net)
        name = net_kwargs.pop("name")
        weights = net_kwargs.pop("weights", None)
        net_kwargs.pop("initial_weights", None)  # a record only (see on_save_checkpoint)
        self.freeze_backbone_epochs = int(net_kwargs.pop("freeze_backbone_epochs", 0) or 0)
        net_kwargs["num_outputs"] = len(self.findings) or (
            1 if self.num_classes == 2 else self.num_classes
        )
        self.net = create_model(name, **net_kwargs)
        if weights:
            load_weights(self.net, weights)
        self.head_name = classifier_name(self.net)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        if compile:
            self.net.compile()  # in place: parameter names (and checkpoints) stay unprefixed

    def _add_epoch_metrics(self, threshold: float) -> None:
        """Per stage: the classification metrics, the mean loss and the non-finite count."""
        # Keyed "<stage>_": a bare "train" would clash with nn.Module.train. ``threshold`` is
        # only where the per-epoch monitoring metrics call (0.5); the decision threshold is the
        # operating point the evaluation pass chooses and stores in the checkpoint.
        # No host synchronisation per step (tests/models/test_module.py counts them):
        # probabilities and targets come from this module, so torchmetrics' input checks are
        # skipped, and the loss means and non-finite counts skip their NaN checks (each an
        # ``if tensor.any()``). A NaN
        # loss then makes the epoch's mean NaN rather than being dropped from it, and divergence
        # is caught at the end of the step by FailOnNonFinite, on the loss the progress bar reads.
        self.metrics = torch.nn.ModuleDict(
            {
                f"{s}_": FindingPredictions()
                if self.findings
                else classification_metrics(self.num_classes, threshold, validate_args=False)
                for s in STAGES
            }
        )
        self.losses = torch.nn.ModuleDict({f"{s}_": WeightedMean() for s in STAGES})
        # Predictions that are NaN or infinite this epoch: any at all voids the epoch's metrics
        # (torchmetrics would sort NaNs and report a plausible AUROC for a diverged network).
        self.non_finite = torch.nn.ModuleDict(
            {f"{s}_": SumMetric(nan_strategy="disable") for s in STAGES}
        )

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
        # torchmetrics keeps metric states out of the state dict; a resumed run must still
        # report the best score it reached before it was stopped.
        if self.best_val.update_called:
            checkpoint[BEST_VAL_KEY] = float(self.best_val.compute())
        # Empty at an epoch's end (reset when it was logged); in the middle of one, a resume
        # needs them for that epoch's training metrics.
        if states := metric_states(self._training_epoch_metrics()):
            checkpoint[TRAIN_EPOCH_KEY] = states

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if mode:
            self._keep_backbone_statistics()
        return self

    def _keep_backbone_statistics(self) -> None:
        """A frozen backbone's batch norms stay in eval mode (``keep_backbone_statistics``)."""
        if getattr(self, "freeze_backbone", False):
            keep_backbone_statistics(self.net, self.head_name)

    def setup(self, stage: str) -> None:
        # Validating on other data than it was trained on (cxrnet-eval's validate), the val
        # loader's source indices are into that data's sources, which name its metrics.
        datamodule = getattr(self.trainer, "datamodule", None)
        sources = tuple(getattr(datamodule, "val_sources", ()))
        if stage != "fit" and sources != self.val_sources:
            self.val_sources = sources
            self.source_predictions = SourcePredictions().to(self.device) if sources else None

    def on_train_epoch_start(self) -> None:
        # Lightning never calls train() before the first epoch (a module starts in train mode).
        self._keep_backbone_statistics()
        if self.freeze_backbone_epochs > 0:
            set_backbone_trainable(
                self.net, self.head_name, self.current_epoch >= self.freeze_backbone_epochs
            )

    def probabilities(self, logits: Tensor) -> Tensor:
        """Pneumonia probability (binary), class probabilities (multiclass) or one probability
        per finding (findings, in ``findings``' order)."""
        if self.findings:
            return torch.sigmoid(logits)
        if self.num_classes == 2:
            return pneumonia_probability(logits)
        return torch.softmax(logits, dim=-1)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return batch_loss(self.per_sample_loss(logits, targets), targets, bool(self.findings))

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Each film's loss, weighted by its class weight (``loss`` is their mean); for findings,
        the mean of its labelled findings' weighted BCE (``finding_loss``)."""
        loss = finding_loss if self.findings else class_loss
        return loss(logits, targets, self.class_weights, self.hparams.label_smoothing)

    def _step(self, batch: Sequence[Tensor], stage: str) -> Tensor:
        # A val batch of films that name their sources carries each film's source index too.
        images, targets, *sources = batch
        logits = self(images)
        per_sample = self.per_sample_loss(logits, targets)
        loss = batch_loss(per_sample, targets, bool(self.findings))
        weight = (~torch.isnan(targets)).sum() if self.findings else targets.numel()
        self.losses[f"{stage}_"].update(loss.detach(), weight=weight)
        probabilities = self.probabilities(logits.detach())
        finite = torch.isfinite(probabilities).reshape(len(targets), -1).all(dim=1)
        self.non_finite[f"{stage}_"].update((~finite).sum())
        # Non-finite rows are replaced, not dropped: dropping them needs the host to learn how
        # many remain (a synchronisation per step on a GPU), and any of them voids the epoch's
        # metrics anyway (compute_epoch_metrics reports NaN).
        keep = finite.reshape(-1, *([1] * (probabilities.ndim - 1)))
        placeholder = torch.full_like(probabilities, 1.0 / self.num_classes)
        kept = torch.where(keep, probabilities, placeholder)
        self.metrics[f"{stage}_"].update(kept, targets)
        if sources and stage == "val" and self.source_predictions is not None:
            self.source_predictions.update(kept, targets, per_sample.detach(), sources[0])
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self.log("train/loss_step", loss, prog_bar=True, batch_size=len(batch[1]))
        return loss

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.probabilities(self(batch[0]))

    def compute_epoch_metrics(self, stage: str) -> dict[str, float]:
        """Metrics over every sample seen this epoch, then reset for the next one."""
        values: dict[str, float] = {f"{stage}/loss": float(self.losses[f"{stage}_"].compute())}
        if float(self.non_finite[f"{stage}_"].compute()) > 0:
            # No metric from NaN predictions: every name is present, every value NaN.
            values |= dict.fromkeys(self._epoch_names(stage), float("nan"))
            if self._has_source_predictions(stage):
                values |= dict.fromkeys(per_source_names(stage, self.val_sources), float("nan"))
            values[f"{stage}/loss"] = float("nan")
            self._reset_epoch(stage)
            return values
        if self.findings:
            probabilities, targets = self.metrics[f"{stage}_"].compute()
            values |= finding_values(
                stage,
                self.findings,
                probabilities.double().cpu().numpy(),
                targets.cpu().numpy(),
                threshold=float(self.hparams.threshold),
                min_positives=int(self.hparams.min_finding_positives),
            )
            self._reset_epoch(stage)
            return values
        for name, value in self.metrics[f"{stage}_"].compute().items():
            if value.ndim == 0:
                values[f"{stage}/{name}"] = float(value)
            else:  # per-class recall, named by class
                for class_name, per_class in zip(self.class_names, value, strict=True):
                    values[f"{stage}/recall_{class_name.lower()}"] = float(per_class)
        if self._has_source_predictions(stage):
            # Every process computes it (the states are gathered from all of them).
            values |= source_values(
                stage,
                self.val_sources,
                *self.source_predictions.compute(),
                num_classes=self.num_classes,
                threshold=float(self.hparams.threshold),
            )
        self._reset_epoch(stage)
        return values

    def _epoch_names(self, stage: str) -> list[str]:
        if self.findings:
            return finding_metric_names(stage, self.findings)
        return epoch_metric_names(stage, self.class_names)

    def _has_source_predictions(self, stage: str) -> bool:
        return (
            stage == "val"
            and self.source_predictions is not None
            and self.source_predictions.update_called
        )

    def _reset_epoch(self, stage: str) -> None:
        for metrics in (self.losses, self.metrics, self.non_finite):
            metrics[f"{stage}_"].reset()
        if stage == "val" and self.source_predictions is not None:
            self.source_predictions.reset()

    def _log_epoch(self, stage: str) -> dict[str, float]:
        if not self.losses[f"{stage}_"].update_called:
            # A run resumed at an epoch boundary finishes the epoch it stopped in without
            # seeing a batch of it: there is nothing to report for that epoch.
            return {}
        values = self.compute_epoch_metrics(stage)
        # The progress bar shows the pooled numbers; per-source and per-finding ones
        # (<stage>/<metric>/<source or finding>) go to the loggers only, or a few sources or
        # findings would fill the terminal.
        pooled = {key: value for key, value in values.items() if key.count("/") == 1}
        self.log_dict(pooled, prog_bar=stage == "val", sync_dist=False)
        if per_source := {key: value for key, value in values.items() if key not in pooled}:
            self.log_dict(per_source, sync_dist=False)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        if self.trainer.sanity_checking or not values:
            return
        monitor = self.hparams.monitor
        if monitor not in values and self.trainer.state.fn != TrainerFn.FITTING:
            return  # a per-source monitor, validating data without that source (cxrnet-eval)
        self.best_val.update(torch.tensor(values[monitor]))
        self.log(f"{monitor}_best", self.best_val.compute(), sync_dist=False)
        self._step_plateau_schedulers(values)

    def _step_plateau_schedulers(self, values: Mapping[str, float]) -> None:
        """ReduceLROnPlateau steps here, at the end of validation, not at the end of the epoch.

        The checkpoints of an epoch are written when validation ends; Lightning steps epoch
        schedulers after that and skips the step when it resumes from such a checkpoint, so a
        resumed run would lower its learning rate at other epochs than the uninterrupted one.
        Stepped here, the checkpoint holds the stepped scheduler and a resume steps it as the
        uninterrupted run did.
        """
        if self.trainer.state.fn != TrainerFn.FITTING:
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if isinstance(scheduler, ReduceLROnPlateau):
                name = self.hparams.scheduler_monitor
                if name not in values:
                    raise KeyError(
                        f"scheduler_monitor {name!r} is not a validation metric; choose from "
                        f"{sorted(values)}"
                    )
                scheduler.step(values[name])

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if isinstance(scheduler, ReduceLROnPlateau):
            return  # stepped at the end of validation (see above)
        super().lr_scheduler_step(scheduler, metric)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if BEST_VAL_KEY in checkpoint:
            self.best_val.reset()
            self.best_val.update(torch.tensor(checkpoint[BEST_VAL_KEY]))
        if TRAIN_EPOCH_KEY in checkpoint:
            restore_metric_states(self._training_epoch_metrics(), checkpoint[TRAIN_EPOCH_KEY])

    def _training_epoch_metrics(self) -> dict[str, Any]:
        return {
            "loss": self.losses["train_"],
            "non_finite": self.non_finite["train_"],
            "metrics": self.metrics["train_"],
        }

    def configure_optimizers(self) -> Any:
        return optimizer_settings(
            self.hparams.optimizer,
            self.hparams.scheduler,
            self.hparams.scheduler_monitor,
            self.parameters(),
            total_steps=lambda: int(self.trainer.estimated_stepping_batches),
        )
