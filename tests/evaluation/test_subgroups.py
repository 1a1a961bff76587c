"""The subgroup report (issue 18 item 3): per metadata column, the model's numbers within each
category with patient-bootstrap intervals, and a shortcut check of the column alone."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.console import QUICK, run_train

from cxrnet.data.records import make_record
from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.model_card import render_model_card
from cxrnet.evaluation.proportions import widened
from cxrnet.evaluation.report import (
    ReportSettings,
    SplitPredictions,
    evaluate_predictions,
    read_predictions,
    write_predictions,
)
from cxrnet.evaluation.subgroup_columns import age_bands, age_in_years, band_labels
from cxrnet.evaluation.subgroups import UNKNOWN, shortcut_check, subgroup_table
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.user_errors import ConfigError

# Ten films: five PA (patient a has two), four AP, one without a view.
VIEWS = ("PA", "PA", "PA", "PA", "PA", "AP", "AP", "AP", "AP", "")
LABELS = np.array([1, 1, 0, 0, 0, 1, 1, 1, 0, 1])
PROBS = np.array([0.9, 0.6, 0.7, 0.2, 0.1, 0.8, 0.4, 0.3, 0.5, 0.95])
PATIENTS = ("a", "a", "b", "c", "d", "e", "f", "g", "h", "i")
THRESHOLD = 0.5


def _table(resamples: int = 200, seed: int = 0):
    values = tuple(v or UNKNOWN for v in VIEWS)
    rows = subgroup_table(
        "view", values, PROBS, LABELS, THRESHOLD, PATIENTS, resamples=resamples, seed=seed
    )
    return {row.category: row for row in rows}


def test_subgroup_table_by_hand() -> None:
    rows = _table()
    assert list(rows) == ["AP", "PA", UNKNOWN], "categories sorted, unknown last"
    pa, ap, unknown = rows["PA"], rows["AP"], rows[UNKNOWN]
    # PA: positives 0.9, 0.6 against negatives 0.7, 0.2, 0.1: 3 + 2 of 6 pairs ranked right;
    # at 0.5 both positives are caught and 0.7 is a false positive.
    assert (pa.n, pa.n_pos) == (5, 2)
    assert pa.prevalence.value == pytest.approx(2 / 5)
    assert pa.auroc.value == pytest.approx(5 / 6)
    assert pa.sensitivity.value == pytest.approx(1.0)
    assert pa.specificity.value == pytest.approx(2 / 3)
    # AP: positives 0.8, 0.4, 0.3 against the negative 0.5: one pair of three; 0.5 >= 0.5 is
    # called pneumonia, so the only normal film is missed.
    assert (ap.n, ap.n_pos) == (4, 3)
    assert ap.prevalence.value == pytest.approx(3 / 4)
    assert ap.auroc.value == pytest.approx(1 / 3)
    assert ap.sensitivity.value == pytest.approx(1 / 3)
    assert ap.specificity.value == pytest.approx(0.0)
    # One pneumonia film without a view: counted, its AUROC and specificity undefined.
    assert (unknown.n, unknown.n_pos) == (1, 1)
    assert unknown.auroc.value is None and unknown.auroc.low is None
    assert unknown.specificity.value is None
    assert unknown.sensitivity.value == pytest.approx(1.0)
    for row in rows.values():
        for estimate in row.estimates().values():
            if estimate.value is not None:
                assert estimate.low <= estimate.high


def _by_hand_intervals(chosen: np.ndarray, resamples: int, seed: int, level: float) -> dict:
    """The PA films resampled one resample at a time: patients drawn with replacement (numbered
    in sorted-name order, as the bootstrap numbers them), all films of each drawn patient."""
    probs, labels = PROBS[chosen], LABELS[chosen]
    patients = np.asarray(PATIENTS)[chosen]
    names = sorted(set(patients))
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(names), (resamples, len(names)))
    samples: dict[str, list[float]] = {k: [] for k in ("prev", "auroc", "sens", "spec")}
    for row in drawn:
        films = np.concatenate([np.flatnonzero(patients == names[g]) for g in row])
        p, y = probs[films], labels[films]
        called = p >= THRESHOLD
        samples["prev"].append(y.mean())
        samples["auroc"].append(auroc(p, y))
        samples["sens"].append(called[y == 1].mean() if (y == 1).any() else math.nan)
        samples["spec"].append((~called[y == 0]).mean() if (y == 0).any() else math.nan)
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in samples.items():
        array = np.asarray(values)
        out[name] = tuple(np.percentile(array[np.isfinite(array)], [tail, 100 - tail]))
    return out


def test_subgroup_intervals_equal_a_resampling_done_by_hand() -> None:
    resamples, seed = 60, 7
    pa = _table(resamples, seed)["PA"]
    expected = _by_hand_intervals(np.asarray(VIEWS) == "PA", resamples, seed, 0.95)
    # The proportions' intervals then contain their exact ones (PA: 2 pneumonia of 5 films,
    # both caught; 2 of 3 normal films cleared).
    for name, (successes, trials) in {"prev": (2, 5), "sens": (2, 2), "spec": (2, 3)}.items():
        expected[name] = widened(expected[name], successes, trials)
    assert expected["sens"] == pytest.approx((0.025**0.5, 1.0))
    for name, estimate in (
        ("prev", pa.prevalence),
        ("auroc", pa.auroc),
        ("sens", pa.sensitivity),
        ("spec", pa.specificity),
    ):
        assert (estimate.low, estimate.high) == pytest.approx(expected[name]), name


def test_age_bands_cut_at_the_edges_and_keep_the_films_without_an_age() -> None:
    assert band_labels([18, 40, 65]) == ("<18", "18-39", "40-64", "65+")
    assert band_labels([0.5, 2]) == ("<0.5", "0.5-<2", "2+")
    ages = ["17", "18", "39.5", "40", "64", "65", "90", "", "n/a", "-3", "045Y", "018M"]
    assert age_bands(ages, [18, 40, 65]) == (
        "<18",
        "18-39",
        "18-39",
        "40-64",
        "40-64",
        "65+",
        "65+",
        UNKNOWN,
        UNKNOWN,
        UNKNOWN,
        "40-64",
        "<18",
    )
    assert age_in_years("006M") == pytest.approx(0.5)


def test_a_view_that_determines_the_label_is_flagged_and_a_random_column_is_not() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    views = np.where(labels == 1, "AP", "PA")
    # Flip a few views: the confound is strong, not perfect.
    views[:20] = np.where(views[:20] == "AP", "PA", "AP")
    confound = shortcut_check("view", tuple(views), labels, flag=0.7)
    assert confound.flagged and confound.kind == "categorical"
    # Prevalence 20/... per view: AUROC of scoring each film by its view's prevalence.
    prevalence = {v: labels[views == v].mean() for v in ("AP", "PA")}
    assert confound.auroc == pytest.approx(auroc(np.vectorize(prevalence.get)(views), labels))
    assert "view alone predicts the label with AUROC" in confound.sentence("test")
    assert "read the model's AUROC within each view" in confound.sentence("test")

    sex = tuple(rng.choice(["F", "M"], 400))
    random_column = shortcut_check("sex", sex, labels, flag=0.7)
    assert not random_column.flagged and random_column.auroc < 0.6
    # Equal prevalence in every category: every film gets the same score, AUROC exactly 0.5.
    even = shortcut_check("sex", ("F", "M", "F", "M"), np.array([1, 1, 0, 0]))
    assert even.auroc == pytest.approx(0.5) and not even.flagged


def test_a_numeric_column_is_scored_in_its_better_direction() -> None:
    # Pneumonia at ages 1, 2, 3, normal at 2, 5, 6: 1.5 of 9 pairs with the older one ill.
    ages = ("1", "2", "3", "2", "5", "6", "")
    labels = np.array([1, 1, 1, 0, 0, 0, 1])
    check = shortcut_check("age", ages, labels, flag=0.8)
    assert check.kind == "numeric" and check.direction == "lower"
    assert check.auroc == pytest.approx(1 - 1.5 / 9)
    assert (check.films, check.total) == (6, 7), "the film without an age is counted as left out"
    assert check.flagged
    assert "(lower age with pneumonia; on the 6 of 7 films with one)" in check.sentence("val")


def _predictions(n: int = 60, seed: int = 1) -> SplitPredictions:
    """Films whose view decides most labels, with ages, as records carrying metadata."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    views = np.where(labels == 1, "AP", "PA")
    ages = [str(int(a)) for a in rng.integers(1, 90, n)]
    ages[0] = ""  # no age: counted under unknown
    records = [
        make_record(
            Path(f"film_{i}.png"),
            int(labels[i]),
            "test",
            patient=f"p{i // 2}",
            metadata={"view": str(views[i]), "age": ages[i]},
        )
        for i in range(n)
    ]
    probs = np.clip(0.5 * labels + 0.5 * rng.random(n), 0, 1)
    return SplitPredictions.from_records(probs, labels, records)


def _report(**settings):
    settings = {"resamples": 50, "subgroups": ("view", "age_band"), **settings}
    preds = _predictions()
    return evaluate_predictions(
        {"test": preds},
        operating_point=OperatingPoint(0.5, "youden"),
        settings=ReportSettings(**settings),
    )


def _card(report) -> str:
    return render_model_card(
        report,
        checkpoint="best.ckpt",
        data_sources=["data"],
        counts=[],
        preprocessing={},
        network={},
        figures={},
    )


def test_report_md_and_metrics_hold_the_tables_and_the_flag() -> None:
    report = _report()
    part = report.splits["test"].subgroups
    assert part is not None and list(part.tables) == ["view", "age_band"]
    pa = {row.category: row for row in part.tables["view"]}["PA"]
    m = report.metrics
    assert m["test/subgroup/view=PA/n"] == pa.n
    assert m["test/subgroup/view=PA/prevalence"] == pytest.approx(0.0)
    assert math.isnan(m["test/subgroup/view=PA/auroc"]), "one class: undefined, not a number"
    assert m["test/subgroup/view=AP/recall_at_threshold"] == pytest.approx(
        _sensitivity_of_ap(report)
    )
    low, high = (m[f"test/subgroup/view=AP/recall_at_threshold_ci_{e}"] for e in ("low", "high"))
    assert low <= m["test/subgroup/view=AP/recall_at_threshold"] <= high
    assert "test/subgroup/age_band=unknown/n" in m and m["test/subgroup/age_band=unknown/n"] == 1
    assert m["test/shortcut/view/auroc"] == pytest.approx(1.0)
    assert m["test/shortcut/view/flagged"] == 1.0
    assert "test/shortcut/age/auroc" in m, "the numbers behind a derived age band are checked"

    card = _card(report)
    assert (
        "## Subgroups" in card and "### test: by view" in card and "### test: by age_band" in card
    )
    model = f"(the model's AUROC {m['test/auroc']:.2f})"
    assert (
        f"**Possible shortcut:** view alone predicts the label with AUROC 1.00 on test {model}: "
        "read the model's AUROC within each view" in card
    )
    assert "| PA | " in card and "n/a (one class)" in card
    assert "| unknown | 1 |" in card


def _sensitivity_of_ap(report) -> float:
    """Sensitivity of the AP films computed directly from the predictions."""
    preds = report.splits["test"].predictions
    ap = np.asarray(preds.columns["view"]) == "AP"
    positive = ap & (preds.labels == 1)
    return float(np.mean(preds.probabilities[positive] >= report.operating_point.threshold))


def test_no_subgroups_asked_adds_nothing() -> None:
    report = _report(subgroups=())
    assert report.splits["test"].subgroups is None
    assert not any("/subgroup/" in key or "/shortcut/" in key for key in report.metrics)
    assert "## Subgroups" not in _card(report)


def test_metadata_columns_survive_the_predictions_csv(tmp_path: Path) -> None:
    """The fold ensemble reports from predictions files: the subgroups come back with them."""
    preds = _predictions()
    write_predictions(tmp_path / "predictions_test.csv", preds, 0.5)
    again = evaluate_predictions(
        {"test": read_predictions(tmp_path / "predictions_test.csv")},
        operating_point=OperatingPoint(0.5, "youden"),
        settings=ReportSettings(resamples=50, subgroups=("view", "age_band")),
    )
    subgroup_keys = {
        k: v for k, v in _report().metrics.items() if k.split("/")[1] in ("subgroup", "shortcut")
    }
    assert {k: again.metrics[k] for k in subgroup_keys} == pytest.approx(subgroup_keys, nan_ok=True)


def test_a_column_no_film_has_is_an_error_naming_the_columns_present() -> None:
    with pytest.raises(ConfigError, match=r"'site'.*no film has.*\['age', 'view'\]"):
        _report(subgroups=("view", "site"))
    preds = SplitPredictions(PROBS, LABELS, ("f",) * 10, ("",) * 10, None, {"view": VIEWS})
    with pytest.raises(ConfigError, match=r"'age_band' \(derived from the films' age column\)"):
        evaluate_predictions(
            {"test": preds},
            operating_point=OperatingPoint(0.5, "youden"),
            settings=ReportSettings(subgroups=("age_band",)),
        )


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"subgroups": "view"}, "report.subgroups"),
        ({"subgroups": ("view", "view")}, "report.subgroups"),
        ({"age_bands": (40, 18)}, "report.age_bands"),
        ({"age_bands": ()}, "report.age_bands"),
        ({"shortcut_flag": 0.3}, "report.shortcut_flag"),
    ],
)
def test_bad_subgroup_settings_name_the_setting(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ReportSettings(**settings)


def test_wandb_gets_a_table_per_column_and_the_shortcut_check() -> None:
    from cxrnet.tracking.wandb_report import SUBGROUP_COLUMNS, WandbReport

    logged: list[dict] = []
    logger = SimpleNamespace(experiment=SimpleNamespace(log=logged.append))
    WandbReport().log_subgroups(logger, _report())
    (payload,) = logged
    assert set(payload) == {
        "test/subgroups/view",
        "test/subgroups/age_band",
        "test/shortcut_check",
    }
    view = payload["test/subgroups/view"]
    assert view.columns == SUBGROUP_COLUMNS
    rows = {row[0]: dict(zip(view.columns, row, strict=True)) for row in view.data}
    assert rows["PA"]["auroc"] is None and rows["PA"]["prevalence"] == 0.0
    checks = {row[0]: row for row in payload["test/shortcut_check"].data}
    assert checks["view"][-1] is True


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_train_stops_before_training_on_a_column_no_film_has(
    synthetic_root: Path, tmp_path: Path
) -> None:
    done = run_train([*QUICK, f"data.root={synthetic_root}", "report.subgroups=[view]"], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "report.subgroups names 'view', which no film has" in line
    assert not list(tmp_path.rglob("*.ckpt")), "nothing trained"


def test_train_refuses_bad_age_bands_before_reading_data(tmp_path: Path) -> None:
    done = run_train(["debug=fast", "report.age_bands=[40,18]"], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "report.age_bands=[40, 18] must be increasing" in done.stderr


def test_a_training_run_reports_subgroups_end_to_end(
    compose_cfg, synthetic_root: Path, tmp_path: Path
) -> None:
    """Films carrying a view (here: the label's, a perfect confound) and an age through a whole
    run, read from a manifest's columns: report.md and metrics.json hold the tables and the
    flag, and the predictions keep the columns."""
    from cxrnet.training.run import run

    manifest = tmp_path / "films.csv"
    films = sorted(synthetic_root.glob("*/*/*.jpeg"))
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "view", "age"])
        for i, film in enumerate(films):
            label = film.parent.name
            view = "AP" if label == "PNEUMONIA" else "PA"
            writer.writerow([film, label, film.parent.parent.name, view, 3 + i * 37 % 61])
    cfg = compose_cfg(
        "train",
        [
            *QUICK,
            f"data.root={manifest}",
            "trainer.max_epochs=1",
            "logger=[csv]",
            "report.resamples=50",
            "report.subgroups=[view,age_band]",
            "report.age_bands=[5,18]",
        ],
    )
    record = run(cfg)
    run_dir = Path(record.run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["test/shortcut/view/auroc"] == 1.0 and metrics["test/shortcut/view/flagged"]
    assert metrics["test/subgroup/view=AP/auroc"] is None, "one class in the view: null"
    assert metrics["test/subgroup/age_band=<5/n"] >= 1
    card = (run_dir / "report.md").read_text()
    assert "view alone predicts the label with AUROC 1.00 on test" in card
    assert "### test: by age_band" in card and "| 5-17 |" in card
    header = (run_dir / "predictions_test.csv").read_text().splitlines()[0].split(",")
    assert {"age", "view"} <= set(header)


def test_fold_ensembles_keep_the_metadata_columns() -> None:
    """cxrnet-ensemble reports pooled out-of-fold and mean held-out predictions: their films
    keep their views, so the subgroup report works there too."""
    from cxrnet.passes.fold_ensemble import mean_over_members, pooled_out_of_fold

    preds = _predictions(n=10)
    first = SplitPredictions(
        preds.probabilities[:6],
        preds.labels[:6],
        preds.files[:6],
        preds.subtypes[:6],
        preds.patients[:6],
        {name: values[:6] for name, values in preds.columns.items()},
    )
    second = SplitPredictions(
        preds.probabilities[6:], preds.labels[6:], preds.files[6:], preds.subtypes[6:]
    )
    pooled = pooled_out_of_fold([first, second])
    assert pooled.columns["view"] == preds.columns["view"][:6] + ("",) * 4
    reversed_films = SplitPredictions(
        preds.probabilities[::-1],
        preds.labels[::-1],
        preds.files[::-1],
        preds.subtypes[::-1],
        preds.patients[::-1],
        {name: values[::-1] for name, values in preds.columns.items()},
    )
    mean = mean_over_members([reversed_films, preds], ["fold 0", "fold 1"])
    view_of = dict(zip(preds.files, preds.columns["view"], strict=True))
    assert mean.columns["view"] == tuple(view_of[file] for file in mean.files)


def test_the_evaluation_pass_checks_the_columns_before_predicting(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cxrnet-eval's pass (and cxrnet-train's) refuses a column before predicting any film."""
    import cxrnet.passes.evaluation_pass as evaluation_pass
    from cxrnet.data.datamodule import ChestXRayDataModule
    from cxrnet.evaluation.thresholds import ThresholdRule

    dm = ChestXRayDataModule(root=synthetic_root, image_size=32, num_workers=0, cache_dir=None)
    dm.setup("fit")

    def never(*args, **kwargs):
        raise AssertionError("predicted before the columns were checked")

    monkeypatch.setattr(evaluation_pass, "predict_split", never)
    with pytest.raises(ConfigError, match=r"'view', which no film has; the films' columns are"):
        evaluation_pass.run_evaluation_pass(
            SimpleNamespace(hparams={}),
            dm,
            ["val", "test"],
            tmp_path,
            rule=ThresholdRule(),
            settings=ReportSettings(subgroups=("view",)),
        )
    assert not list(tmp_path.iterdir()), "nothing written"
