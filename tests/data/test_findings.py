"""data.task=findings (issue 28): findings read from folders and manifests, targets with masks and
uncertainty policies, the masked weighted BCE, and per-finding metrics equal to each finding's
labelled films alone."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrnet.data.discovery import discover_folders
from cxrnet.data.findings import (
    film_findings,
    parse_findings_cell,
    positive_weights,
    resolve_findings,
    targets,
)
from cxrnet.data.manifest import read_manifest
from cxrnet.data.records import Record, make_record
from cxrnet.evaluation.curves import auroc, average_precision
from cxrnet.evaluation.finding_metrics import finding_values
from cxrnet.models.losses import finding_loss
from cxrnet.models.module import ClassifierModule
from cxrnet.user_errors import ConfigError, DataError

NET = {"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8}
NAN = math.nan


def _module(**kwargs) -> ClassifierModule:
    return ClassifierModule(
        net=NET, optimizer=functools.partial(torch.optim.Adam, lr=1e-3), **kwargs
    ).eval()


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)).save(path)
    return path


def _film(name: str, klass: str) -> Record:
    """A training film of the class, with the findings its class says."""
    label = int(klass == "PNEUMONIA")
    return make_record(Path(name), label, "train", findings=film_findings(klass))


def test_a_findings_cell_reads_present_absent_and_uncertain_and_names_its_problems() -> None:
    values, problems = parse_findings_cell("Effusion | mass=0|nodule=-1|pleural thickening")
    assert values == {"effusion": 1.0, "mass": 0.0, "nodule": -1.0, "pleural_thickening": 1.0}
    assert problems == []
    _, problems = parse_findings_cell("effusoin|mass=2|mass")
    assert len(problems) == 2
    assert "finding 'effusoin' is not one of cxrnet's findings" in problems[0]
    assert "'mass=2' is not <finding>" in problems[1]


def test_targets_mask_what_a_source_does_not_label_and_apply_the_uncertainty_policy() -> None:
    names = ("pneumonia", "effusion", "other_finding")
    # A NORMAL film is absent of every finding; a PNEUMONIA film says nothing of the others.
    assert targets({}, True, names, "ignore").tolist() == [0.0, 0.0, 0.0]
    pneumonia = dict(film_findings("PNEUMONIA"))
    np.testing.assert_array_equal(targets(pneumonia, False, names, "ignore"), [1, NAN, NAN])
    other = dict(film_findings("OTHER_ABNORMAL"))
    np.testing.assert_array_equal(targets(other, False, names, "ignore"), [0, NAN, 1])
    uncertain = {"pneumonia": 1.0, "effusion": -1.0}
    for policy, expected in (("ignore", NAN), ("positive", 1.0), ("negative", 0.0)):
        np.testing.assert_array_equal(
            targets(uncertain, False, names, policy), [1.0, expected, NAN]
        )


def test_finding_weights_balance_each_findings_labelled_films_by_hand() -> None:
    rows = np.array([[1, 0], [0, NAN], [0, 1], [0, NAN], [NAN, 0]], dtype=np.float32)
    # pneumonia: 1 present, 3 absent of 4 labelled -> (4/6, 4/2); effusion: 1 of 3 -> (3/4, 3/2)
    np.testing.assert_allclose(positive_weights(rows), [[4 / 6, 2.0], [3 / 4, 1.5]])


def test_the_masked_loss_by_hand_and_a_masked_finding_moves_no_weight() -> None:
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 1.5]], requires_grad=True)
    rows = torch.tensor([[1.0, NAN], [0.0, 1.0], [NAN, NAN]])
    weights = torch.tensor([[0.5, 2.0], [1.0, 3.0]])
    per_film = finding_loss(logits, rows, weights)

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = [2.0 * bce(0.3, 1), (0.5 * bce(2.0, 0) + 3.0 * bce(0.5, 1)) / 2, 0.0]
    np.testing.assert_allclose(per_film.detach().numpy(), expected, rtol=1e-6)
    per_film.sum().backward()
    assert logits.grad is not None
    assert logits.grad[0, 1] == 0 and logits.grad[2].abs().sum() == 0
    assert torch.isfinite(logits.grad).all()

    # Through the module: a finding no film of the batch labels leaves its head row unchanged.
    module = _module(findings=["pneumonia", "effusion"]).train()
    images = torch.rand(4, 1, 32, 32)
    batch_rows = torch.tensor([[1.0, NAN], [0.0, NAN], [1.0, NAN], [0.0, NAN]])
    module.loss(module(images), batch_rows).backward()
    head = dict(module.net.named_parameters())[f"{module.head_name}.weight"]
    assert head.grad is not None
    assert head.grad[1].abs().sum() == 0 and head.grad[0].abs().sum() > 0
    # The batch loss weighs every labelled finding once (here: the four pneumonia labels).
    with torch.no_grad():
        logits = module(images)
        per = module.per_sample_loss(logits, batch_rows)
        assert float(module.loss(logits, batch_rows)) == pytest.approx(float(per.mean()))


def test_per_finding_metrics_equal_those_of_each_findings_labelled_films_alone() -> None:
    torch.manual_seed(0)
    findings = ["pneumonia", "effusion", "other_finding"]
    module = _module(findings=findings, min_finding_positives=2)
    generator = np.random.default_rng(0)
    probabilities, rows = [], []
    with torch.no_grad():
        for _ in range(3):
            images = torch.rand(10, 1, 32, 32)
            batch = generator.integers(0, 2, (10, 3)).astype(np.float32)
            batch[generator.random((10, 3)) < 0.3] = NAN  # unlabelled
            batch[:2] = [[0, 0, 0], [1, 1, 1]]  # both values of every finding in each batch
            module._step((images, torch.from_numpy(batch)), "val")
            probabilities.append(module.probabilities(module(images)))
            rows.append(batch)
        values = module.compute_epoch_metrics("val")
    p = torch.cat(probabilities).double().numpy()
    y = np.concatenate(rows)
    aurocs = []
    for j, name in enumerate(findings):
        labelled = ~np.isnan(y[:, j])
        expected = auroc(p[labelled, j], y[labelled, j].astype(int))
        assert values[f"val/auroc/{name}"] == pytest.approx(expected, abs=1e-12)
        assert values[f"val/auprc/{name}"] == pytest.approx(
            average_precision(p[labelled, j], y[labelled, j].astype(int)), abs=1e-12
        )
        called = p[labelled, j] >= 0.5
        truth = y[labelled, j] == 1
        assert values[f"val/recall/{name}"] == pytest.approx(called[truth].mean())
        assert values[f"val/specificity/{name}"] == pytest.approx((~called[~truth]).mean())
        aurocs.append(expected)
    assert values["val/auroc"] == pytest.approx(np.mean(aurocs))
    assert values["val/findings_in_mean"] == 3


def test_the_mean_leaves_out_findings_with_too_few_positives_and_says_how_many() -> None:
    p = np.array([[0.9, 0.2], [0.1, 0.8], [0.8, 0.3], [0.2, 0.1]])
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], dtype=np.float32)
    values = finding_values("val", ["pneumonia", "effusion"], p, y, min_positives=2)
    assert values["val/auroc"] == values["val/auroc/pneumonia"] == 1.0
    assert values["val/findings_in_mean"] == 1
    assert values["val/auroc/effusion"] == 1.0  # reported, not averaged


def test_a_monitor_on_a_finding_the_model_does_not_learn_is_refused() -> None:
    _module(findings=["pneumonia", "other_finding"], monitor="val/auroc/other_finding")
    with pytest.raises(ConfigError, match="val/auroc/effusion"):
        _module(findings=["pneumonia", "other_finding"], monitor="val/auroc/effusion")


def test_folders_and_manifests_give_other_abnormal_films_their_findings(tmp_path: Path) -> None:
    for name in ("NORMAL/a.png", "PNEUMONIA/b.png", "OTHER_ABNORMAL/c.png"):
        _image(tmp_path / "site" / "train" / name)
    found = discover_folders(tmp_path / "site", finding_classes=True).records["train"]
    by_class = {record.class_name: record for record in found}
    assert set(by_class) == {"NORMAL", "PNEUMONIA", "OTHER_ABNORMAL"}
    assert by_class["OTHER_ABNORMAL"].finding_values == {"pneumonia": 0.0, "other_finding": 1.0}
    assert by_class["OTHER_ABNORMAL"].label == 0
    # The binary task keeps ignoring the folder, as before.
    plain = discover_folders(tmp_path / "site")
    assert len(plain.records["train"]) == 2
    assert any("OTHER_ABNORMAL" in str(path) for path, _ in plain.ignored)

    manifest = tmp_path / "films.csv"
    manifest.write_text(
        "path,label,findings\n"
        "site/train/NORMAL/a.png,NORMAL,\n"
        "site/train/PNEUMONIA/b.png,PNEUMONIA,effusion|mass=-1\n"
        "site/train/OTHER_ABNORMAL/c.png,OTHER_ABNORMAL,\n"
    )
    records = read_manifest(manifest, finding_classes=True)["train"]
    assert [r.class_name for r in records] == ["NORMAL", "PNEUMONIA", "OTHER_ABNORMAL"]
    assert records[1].finding_values == {"pneumonia": 1.0, "effusion": 1.0, "mass": -1.0}
    with pytest.raises(DataError, match="OTHER_ABNORMAL"):
        read_manifest(manifest)  # the binary task: a film of another class is refused
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,findings\nsite/train/NORMAL/a.png,NORMAL,effusion\n")
    with pytest.raises(DataError, match=r"line 2: .*a NORMAL film cannot have the finding"):
        read_manifest(bad, finding_classes=True)


def test_default_findings_are_those_the_training_films_have_and_each_needs_both_values() -> None:
    films = [
        _film("a.png", "NORMAL"),
        _film("b.png", "PNEUMONIA"),
        _film("c.png", "OTHER_ABNORMAL"),
    ]
    assert resolve_findings(None, {"train": films}, "ignore") == ("pneumonia", "other_finding")
    with pytest.raises(DataError, match=r"effusion \(0 present, 1 absent\)"):
        resolve_findings(["pneumonia", "effusion"], {"train": films}, "ignore")


def test_the_wandb_findings_table_holds_the_reports_rows() -> None:
    from cxrnet.tracking.wandb_report import FINDING_COLUMNS, finding_rows

    metrics = {
        "test/finding/pneumonia/auroc": 0.9,
        "test/finding/pneumonia/auroc_ci_low": 0.8,
        "test/finding/pneumonia/auroc_ci_high": 0.95,
        "test/finding/pneumonia/n_pos": 10.0,
        "test/finding/pneumonia/n_neg": 12.0,
        "test/finding/pneumonia/threshold": 0.4,
        "test/finding/effusion/auroc": math.nan,
        "test/finding_mean/auroc": 0.9,
        "val/finding/pneumonia/auroc": 0.7,
    }
    rows = finding_rows(metrics, "test")
    assert [row[0] for row in rows] == ["pneumonia", "effusion"]
    pneumonia = dict(zip(FINDING_COLUMNS, rows[0], strict=True))
    assert pneumonia["present"] == 10 and pneumonia["absent"] == 12
    assert pneumonia["auroc"] == 0.9 and pneumonia["auroc_ci_low"] == 0.8
    assert pneumonia["threshold"] == 0.4 and pneumonia["auprc"] is None
    assert dict(zip(FINDING_COLUMNS, rows[1], strict=True))["auroc"] is None  # NaN: undefined


def test_the_count_table_shows_other_abnormal_films_apart_from_normal_ones() -> None:
    from cxrnet.data.split_report import count_table

    films = [
        _film("a.png", "NORMAL"),
        _film("b.png", "OTHER_ABNORMAL"),
        _film("c.png", "NORMAL"),
    ]
    (row,) = count_table({"train": films})
    assert (row["NORMAL"], row["PNEUMONIA"], row["OTHER_ABNORMAL"]) == (2, 0, 1)
    (plain,) = count_table({"train": [make_record(Path("d.png"), 0, "train")]})
    assert "OTHER_ABNORMAL" not in plain  # binary data: the table as before
