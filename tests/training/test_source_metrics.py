"""Validation metrics per source of the films (issue 19 item 3): ``val/<metric>/<source>`` equal
to the metrics of each source's films alone, ``val/<metric>/worst`` the worst of them, either
one monitorable (checked once the sources are known), the threshold chosen on one source's val
films (``threshold.source``), and the report's tables per source when there are several."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.console import QUICK, run_folder, run_script, run_train
from helpers.ties import tie_slack

from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic
from cxrnet.evaluation.confusion import confusion_at_threshold
from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.metric_names import check_source_monitor, monitor_mode_for
from cxrnet.evaluation.threshold_films import ThresholdFilms
from cxrnet.evaluation.thresholds import choose_threshold
from cxrnet.models.checkpoint import load_checkpoint, operating_point_of
from cxrnet.models.module import ClassifierModule
from cxrnet.user_errors import ConfigError

NET = {"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8}
SOURCES = ("public", "site")


def _module(**kwargs) -> ClassifierModule:
    return ClassifierModule(
        net=NET, optimizer=functools.partial(torch.optim.Adam, lr=1e-3), **kwargs
    ).eval()


def _expected(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of these films alone, with the project's numpy code (not torchmetrics)."""
    counts = confusion_at_threshold(probabilities, labels, 0.5).metrics()
    bce = -(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    return {
        "auroc": auroc(probabilities, labels),
        "loss": float(bce.mean()),
        **{name: float(counts[name]) for name in ("recall", "specificity", "accuracy", "f1")},
    }


def test_per_source_metrics_equal_the_metrics_of_each_sources_films_alone() -> None:
    torch.manual_seed(0)
    module = _module(val_sources=list(SOURCES), monitor="val/auroc/worst")
    probabilities, labels, sources = [], [], []
    with torch.no_grad():
        for _ in range(3):  # several batches: the epoch's states, not one batch's
            images = torch.rand(10, 1, 32, 32)
            targets = torch.randint(0, 2, (10,))
            targets[:2] = torch.tensor([0, 1])  # both classes in every source
            source = torch.tensor([0, 1] * 5)
            module._step((images, targets, source), "val")
            probabilities.append(module.probabilities(module(images)).squeeze(-1))
            labels.append(targets)
            sources.append(source)
        values = module.compute_epoch_metrics("val")
    p = torch.cat(probabilities).double().numpy()
    y, s = torch.cat(labels).numpy(), torch.cat(sources).numpy()
    for index, name in enumerate(SOURCES):
        mine = s == index
        for metric, value in _expected(p[mine], y[mine]).items():
            assert values[f"val/{metric}/{name}"] == pytest.approx(value, abs=1e-5), metric
    for metric in ("auroc", "recall", "specificity", "accuracy", "f1"):
        per_source = [values[f"val/{metric}/{name}"] for name in SOURCES]
        assert values[f"val/{metric}/worst"] == min(per_source)
    assert values["val/loss/worst"] == max(values[f"val/loss/{name}"] for name in SOURCES)
    # The pooled numbers stay the pooled ones.
    assert values["val/auroc"] == pytest.approx(auroc(p, y), abs=1e-5)
    # Reset with the epoch: the next epoch's values are its own.
    assert not module.source_predictions.update_called


def test_a_metric_a_source_cannot_define_is_nan_and_worst_is_over_the_others() -> None:
    module = _module(val_sources=["a", "b"])
    images = torch.rand(6, 1, 32, 32)
    targets = torch.tensor([0, 1, 0, 1, 1, 1])  # source b: pneumonia films only
    source = torch.tensor([0, 0, 0, 0, 1, 1])
    with torch.no_grad():
        module._step((images, targets, source), "val")
        values = module.compute_epoch_metrics("val")
    assert math.isnan(values["val/auroc/b"]) and math.isnan(values["val/specificity/b"])
    assert math.isfinite(values["val/recall/b"])
    assert values["val/auroc/worst"] == values["val/auroc/a"]


def test_val_batches_without_sources_log_no_per_source_metric() -> None:
    module = _module()
    with torch.no_grad():
        module._step((torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])), "val")
        values = module.compute_epoch_metrics("val")
    assert not [key for key in values if key.count("/") > 1]


def test_monitor_names_a_source_present_or_worst() -> None:
    check_source_monitor("val/auroc/site", SOURCES)
    check_source_monitor("val/auroc/worst", SOURCES)
    check_source_monitor("val/auroc", ())  # not a per-source name: nothing to check
    with pytest.raises(ConfigError, match=r"the val films' sources are \['public', 'site'\]"):
        check_source_monitor("val/auroc/elsewhere", SOURCES)
    with pytest.raises(ConfigError, match="no val film has a source"):
        check_source_monitor("val/auroc/worst", ())
    with pytest.raises(ConfigError, match="val/auroc/site"):
        _module(val_sources=["public"], monitor="val/auroc/site")
    # A per-source loss is minimised like the pooled one.
    assert monitor_mode_for("val/loss/site") == "min"
    assert monitor_mode_for("val/auroc/worst") == "max"


def test_threshold_source_is_shorthand_for_threshold_films() -> None:
    assert ThresholdFilms.from_config(None, "site") == ThresholdFilms.from_setting(
        {"source": "site"}
    )
    assert ThresholdFilms.from_config({"source": "site"}) == ThresholdFilms.from_setting(
        {"source": "site"}
    )
    with pytest.raises(ConfigError, match="set one of them"):
        ThresholdFilms.from_config({"source_split": "val"}, "site")


# --- through cxrnet-train, on a manifest of two sources ---------------------------------------

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest whose films alternate between sources ``public`` and ``site`` in every split
    and class (16 + 16 val films)."""
    folder = tmp_path_factory.mktemp("two_sources")
    spec = SyntheticSpec(
        n_train=48, n_val=32, n_test=16, pneumonia_fraction=0.5, min_size=36, max_size=48, seed=3
    )
    root = generate_synthetic(folder / "data", spec)
    films = sorted(p for p in root.rglob("*.jpeg"))
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "source"])
        for i, path in enumerate(films):
            writer.writerow([path, path.parent.name, path.parent.parent.name, SOURCES[i % 2]])
    return manifest


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _logged(run: Path) -> dict[str, float]:
    """The last value of each metric the CSV logger wrote."""
    (metrics_csv,) = run.glob("csv/**/metrics.csv")
    logged: dict[str, float] = {}
    for row in _rows(metrics_csv):
        logged |= {key: float(value) for key, value in row.items() if value not in ("", None)}
    return logged


def _train(manifest: Path, tmp_path: Path, *extra: str) -> Path:
    done = run_train(
        [*FAST, f"data.root={manifest}", f"paths.log_dir={tmp_path}", *extra], tmp_path
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return run_folder(done.stdout)


@pytest.mark.slow
def test_train_monitors_one_source_and_chooses_the_threshold_on_it(
    two_sources: Path, tmp_path: Path
) -> None:
    run = _train(two_sources, tmp_path, "monitor=val/auroc/site", "threshold.source=site")
    logged = _logged(run)
    val = _rows(run / "predictions_val.csv")
    site = [row for row in val if row["source"] == "site"]
    assert 0 < len(site) < len(val)
    probabilities = np.array([float(row["probability"]) for row in site])
    labels = np.array([int(row["label"] == "PNEUMONIA") for row in site])
    # The logged value is the best (only) epoch's, whose predictions the file holds (6 decimals:
    # no two of them may tie for the AUROC to be the same number).
    assert len(set(probabilities)) == len(probabilities)
    assert logged["val/auroc/site"] == pytest.approx(auroc(probabilities, labels), abs=1e-4)
    assert logged["val/auroc/worst"] == min(logged["val/auroc/site"], logged["val/auroc/public"])
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics["paths"]["best_checkpoint"]
    checkpoint = load_checkpoint(best)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["monitor"] == "val/auroc/site"
    assert float(state["best_model_score"]) == pytest.approx(logged["val/auroc/site"])
    # The threshold: chosen on the site's val films alone.
    expected = choose_threshold(probabilities, labels, "youden")
    assert operating_point_of(checkpoint).threshold == pytest.approx(expected, abs=1e-6)
    assert metrics["metrics"]["val/threshold"] == pytest.approx(expected, abs=1e-6)
    # Two sources: the report shows each one's numbers without being asked to.
    report = (run / "report.md").read_text()
    assert "### val: by source" in report and "### test: by source" in report
    # Its title names what the films are: both sources, generated, with their counts.
    assert report.splitlines()[0] == (
        "# Model card: pneumonia vs normal on SYNTHETIC films (not patients): "
        "public (48 films) and site (48 films)"
    )
    assert "test/subgroup/source=site/auroc" in metrics["metrics"]


@pytest.mark.slow
def test_train_monitors_the_worst_source(two_sources: Path, tmp_path: Path) -> None:
    run = _train(two_sources, tmp_path, "monitor=val/auroc/worst")
    logged = _logged(run)
    per_source = [logged[f"val/auroc/{name}"] for name in SOURCES]
    assert logged["val/auroc/worst"] == min(per_source)
    best = json.loads((run / "metrics.json").read_text())["paths"]["best_checkpoint"]
    (state,) = [
        v for k, v in load_checkpoint(best)["callbacks"].items() if k.startswith("ModelCheckpoint")
    ]
    assert state["monitor"] == "val/auroc/worst"
    assert float(state["best_model_score"]) == pytest.approx(min(per_source))


@pytest.mark.parametrize(
    "key", ["monitor", pytest.param("callbacks.model_checkpoint.monitor", marks=pytest.mark.slow)]
)
@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_a_monitor_on_a_source_the_data_lacks_stops_before_training(
    two_sources: Path, tmp_path: Path, key: str
) -> None:
    done = run_train(
        [*FAST, f"data.root={two_sources}", f"paths.log_dir={tmp_path}", f"{key}=val/auroc/x"],
        tmp_path,
    )
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert f"{key}=val/auroc/x: the val films' sources are ['public', 'site']" in (
        done.stdout + done.stderr
    )
    assert "Epoch 0" not in done.stdout + done.stderr


@pytest.mark.slow  # two DDP processes on the CPU (about 40 s on 2 busy cores)
def test_per_source_metrics_under_ddp_cover_every_processs_films(
    two_sources: Path, tmp_path: Path
) -> None:
    # 32 val films over 2 processes: each scores 16 and none pads its share with repeats, so the
    # gathered per-source numbers must equal those of every film's prediction.
    run = _train(
        two_sources,
        tmp_path,
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "data.batch_size=8",
        "monitor=val/auroc/site",
    )
    assert json.loads((run / "metrics.json").read_text())["extra"]["world_size"] == 2
    logged = _logged(run)
    val = _rows(run / "predictions_val.csv")
    for name in SOURCES:
        rows = [row for row in val if row["source"] == name]
        probabilities = np.array([float(row["probability"]) for row in rows])
        labels = np.array([int(row["label"] == "PNEUMONIA") for row in rows])
        expected = _expected(probabilities, labels)
        # The CSV rounds to 6 decimals, so films the model scored apart can tie in it.
        slack = tie_slack(probabilities, labels) + 1e-4
        assert logged[f"val/auroc/{name}"] == pytest.approx(expected["auroc"], abs=slack)
        for metric in ("recall", "specificity"):
            assert logged[f"val/{metric}/{name}"] == pytest.approx(expected[metric], abs=1e-4)


def _with_sources(manifest: Path, out: Path, names: str | None) -> Path:
    """``manifest`` with its films' sources renamed in turn from ``names``, or without any."""
    rows = _rows(manifest)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split", "source"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "source": names[i % len(names)] if names else ""})
    return out


@pytest.mark.slow  # a training run and two cxrnet-eval runs (about 40 s on 2 busy cores)
def test_eval_names_the_per_source_metrics_after_the_data_it_scores(
    two_sources: Path, tmp_path: Path
) -> None:
    # The subtype task validates through the trainer in cxrnet-eval: the val loader's source
    # indices are into the scored data's sources, not the training data's.
    run = _train(two_sources, tmp_path, "data.task=subtype", "monitor=val/auroc/worst")
    checkpoint = json.loads((run / "metrics.json").read_text())["paths"]["best_checkpoint"]
    for names, expected in (("abc", ["a", "b", "c", "worst"]), (None, [])):
        data = _with_sources(two_sources, tmp_path / f"{names}.csv", names)
        done = run_script(
            "cxrnet-eval",
            [f"ckpt_path={checkpoint}", f"data.root={data}", "stages=[val]"],
            tmp_path,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        printed = {
            line.split(":")[0].removeprefix("val/loss/")
            for line in done.stdout.splitlines()
            if line.startswith("val/loss/")
        }
        assert sorted(printed) == expected
