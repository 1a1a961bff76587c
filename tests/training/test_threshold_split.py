"""Where the threshold is chosen is its own setting (issue 20 row 15): ``threshold.films`` picks the
val films that choose it (``{}``: all), ``data.keep_in_val`` keeps the official val films in val
through a re-split so they can; the model card states where the checkpoint and where the
threshold were chosen, with their sizes per class; a filter no val film meets is an error at
start naming the setting."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.console import QUICK, run_folder, run_train

from cxrnet.data.records import Record, make_record
from cxrnet.data.split_report import patient_overlap
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic
from cxrnet.evaluation.model_card import selection_note
from cxrnet.evaluation.report import SplitPredictions
from cxrnet.evaluation.threshold_films import ThresholdFilms
from cxrnet.evaluation.thresholds import ThresholdRule, choose_threshold
from cxrnet.passes.evaluation_pass import operating_point_on_films
from cxrnet.user_errors import ConfigError, DataError

# --- data.keep_in_val -------------------------------------------------------------------------


def _film(name: str, label: int, folder: str, **metadata: str) -> Record:
    return make_record(Path(f"/data/{folder}/{name}.jpeg"), label, folder, metadata=metadata)


def _kaggle_like() -> dict[str, list[Record]]:
    """Many training patients, 4 + 4 val films; patient IM-0001 has a film in both folders."""
    train = [_film(f"IM-{i:04d}-0001", 0, "train") for i in range(1, 41)]
    train += [_film(f"person{i}_bacteria_{i}", 1, "train") for i in range(1, 41)]
    val = [_film("IM-0001-0002", 0, "val")]
    val += [_film(f"IM-{i:04d}-0001", 0, "val") for i in range(900, 903)]
    val += [_film(f"person{i}_virus_{i}", 1, "val") for i in range(900, 904)]
    return {"train": train, "val": val}


@pytest.mark.parametrize("method", ["patient", "stratified"])
def test_keep_in_val_keeps_the_val_folder_in_val_besides_the_fraction(method: str) -> None:
    records = _kaggle_like()
    plain = make_splits(records, SplitConfig(method, val_fraction=0.2))
    kept = make_splits(records, SplitConfig(method, val_fraction=0.2, keep_in_val=("val",)))
    official = {r.path for r in records["val"]}
    assert official <= {r.path for r in kept["val"]}
    assert not official & {r.path for r in kept["train"]}
    # Without it the re-split sends some official val films to train.
    assert official & {r.path for r in plain["train"]}
    # The rest is re-split by val_fraction as before: about 20% of the 80 training films.
    from_train = [r for r in kept["val"] if r.source_split == "train"]
    assert 12 <= len(from_train) <= 20
    if method == "patient":
        # IM-0001's training film follows its val film: no patient on both sides.
        assert _film("IM-0001-0001", 0, "train").path in {r.path for r in kept["val"]}
        assert patient_overlap(kept) == {}


def test_keep_in_val_follows_byte_identical_copies() -> None:
    records = _kaggle_like()
    copy = records["train"][5]
    duplicates = [[copy, records["val"][4]]]
    kept = make_splits(
        records, SplitConfig("stratified", keep_in_val=("val",)), duplicates=duplicates
    )
    assert copy.path in {r.path for r in kept["val"]}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(split="official", keep_in_val=("train",)), "data.split=official never does"),
        (dict(split="kfold", keep_in_val=("val",)), "set data.keep_in_val=[] for k-fold"),
        (dict(split="patient", keep_in_val=("test",)), "among [train, val]"),
    ],
)
def test_keep_in_val_it_cannot_do_is_refused(config: dict, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_splits(_kaggle_like(), SplitConfig(**config))


def test_keep_in_val_naming_no_film_is_refused() -> None:
    with pytest.raises(DataError, match=r"data.keep_in_val=\['val'\] names no films"):
        make_splits(
            {"train": _kaggle_like()["train"]}, SplitConfig("patient", keep_in_val=("val",))
        )


def test_keep_in_val_on_the_official_split_changes_nothing() -> None:
    records = _kaggle_like()
    assert make_splits(records, SplitConfig("official", keep_in_val=("val",))) == make_splits(
        records, SplitConfig("official")
    )


# --- threshold.films -----------------------------------------------------------------------------


def _val_predictions() -> tuple[SplitPredictions, list[Record]]:
    """Val films from two places whose best thresholds differ: re-split training films separate
    at 0.3, the official val films (a site's own) at 0.8."""
    rng = np.random.default_rng(0)
    records, probabilities = [], []
    for i in range(60):
        label = i % 2
        records.append(_film(f"train{i}", label, "train", source="guangzhou"))
        probabilities.append(rng.uniform(0.35, 0.6) if label else rng.uniform(0.0, 0.25))
    for i in range(16):
        label = i % 2
        records.append(_film(f"val{i}", label, "val", source="site"))
        probabilities.append(rng.uniform(0.85, 1.0) if label else rng.uniform(0.4, 0.75))
    labels = np.array([r.label for r in records])
    return SplitPredictions.from_records(np.array(probabilities), labels, records), records


def test_the_threshold_is_chosen_on_the_films_threshold_on_selects() -> None:
    val, records = _val_predictions()
    rule = ThresholdRule("youden")
    everything = operating_point_on_films(val, records, rule, ThresholdFilms())
    films = ThresholdFilms.from_setting({"source_split": "val"})
    official = operating_point_on_films(val, records, rule, films)
    by_site = operating_point_on_films(
        val, records, rule, ThresholdFilms.from_setting({"source": ["site"]})
    )
    mask = np.array([r.source_split == "val" for r in records])
    assert official.threshold == choose_threshold(
        val.probabilities[mask], val.labels[mask], "youden"
    )
    assert by_site.threshold == official.threshold
    # On these films it separates the site's classes; chosen on all, it calls every site's
    # NORMAL film PNEUMONIA.
    site_normal = val.probabilities[mask & (val.labels == 0)]
    assert np.all(site_normal < official.threshold)
    assert np.all(site_normal >= everything.threshold)
    assert everything.chosen_on == "val"
    assert official.chosen_on == "val (threshold.films={source_split: val})"
    assert "chosen on the val (threshold.films={source_split: val}) split" in official.describe()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            {"source": "elsewhere"},
            r"threshold.films=\{source: elsewhere\} matches no val film \(0 of",
        ),
        ({"subtype": "unknown"}, r"matches no NORMAL val film \(38 of 76"),
        ({"view": "PA"}, r"no val film has a column 'view'"),
    ],
)
def test_a_filter_without_films_of_both_classes_is_an_error_naming_it(
    setting: dict, message: str
) -> None:
    val, records = _val_predictions()
    with pytest.raises(ConfigError, match=message) as error:
        ThresholdFilms.from_setting(setting).select(records, val.labels)
    assert "threshold.films" in str(error.value)


@pytest.mark.parametrize("setting", [["val"], {"source_split": {"a": 1}}, "source_split=val"])
def test_a_malformed_filter_is_an_error_naming_it(setting: object) -> None:
    with pytest.raises(ConfigError, match=r"threshold.films"):
        ThresholdFilms.from_setting(setting)  # type: ignore[arg-type]


def test_the_card_states_both_choices_and_their_sizes() -> None:
    val, records = _val_predictions()
    films = ThresholdFilms.from_setting({"source_split": "val"})
    counts = [{"split": "val", "images": 76, "NORMAL": 38, "PNEUMONIA": 38}]
    note = selection_note(
        counts,
        monitor="val/auroc",
        split="patient",
        val_fraction=0.2,
        criterion="threshold.criterion=f1",
        keep_in_val=("val",),
        threshold_films=films.describe(records, val.labels),
    )
    assert note == (
        "Checkpoint chosen on: the val split (data.split=patient, val_fraction 0.2 from "
        "train+val, plus every film from source split(s) val (data.keep_in_val=[val]); 76 films: "
        "38 NORMAL, 38 PNEUMONIA), by the best val/auroc. Threshold chosen on: the 16 films of "
        "that val split with threshold.films={source_split: val} (8 NORMAL, 8 PNEUMONIA) "
        "(threshold.criterion=f1)."
    )
    assert ThresholdFilms().describe(records, val.labels) == "the same val split"


def test_the_settings_exist_and_keep_best_as_it_was(compose_cfg) -> None:
    default = compose_cfg("train", [])
    assert default.threshold.films is None and list(default.data.keep_in_val) == []
    best = compose_cfg("train", ["experiment=best"])
    assert best.threshold.films is None and list(best.data.keep_in_val) == []
    assert "threshold" in compose_cfg("eval", ["ckpt_path=x"])


# --- through cxrnet-train ---------------------------------------------------------------------

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def kaggle_like_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SyntheticSpec(
        n_train=96, n_val=16, n_test=8, pneumonia_fraction=0.5, min_size=36, max_size=48, seed=3
    )
    return generate_synthetic(tmp_path_factory.mktemp("threshold_split") / "data", spec)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # a training run through the console script (about 40 s on 2 busy cores)
def test_train_chooses_the_threshold_on_the_official_val_films(
    kaggle_like_folders: Path, tmp_path: Path
) -> None:
    done = run_train(
        [
            *FAST,
            f"data.root={kaggle_like_folders}",
            f"paths.log_dir={tmp_path}",
            "data.split=patient",
            "data.keep_in_val=[val]",
            "threshold.films={source_split: val}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = run_folder(done.stdout)
    split = {row["file"]: row for row in _rows(run / "split.csv")}
    official = {file for file, row in split.items() if row["source_split"] == "val"}
    assert len(official) == 16
    assert all(split[file]["split"] == "val" for file in official)
    val_rows = _rows(run / "predictions_val.csv")
    assert len(val_rows) > 16  # the re-split's share of train is in val too
    chosen_on = [row for row in val_rows if row["file"] in official]
    assert len(chosen_on) == 16
    expected = choose_threshold(
        np.array([float(row["probability"]) for row in chosen_on]),
        np.array([int(row["label"] == "PNEUMONIA") for row in chosen_on]),
        "youden",
    )
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["val/threshold"] == pytest.approx(expected, abs=1e-6)
    from cxrnet.models.checkpoint import load_checkpoint, operating_point_of

    best = json.loads((run / "metrics.json").read_text())["paths"]["best_checkpoint"]
    stored = operating_point_of(load_checkpoint(best))
    assert stored.threshold == pytest.approx(expected, abs=1e-6)
    assert stored.chosen_on == "val (threshold.films={source_split: val})"
    card = (run / "report.md").read_text()
    n_val = len(val_rows)
    assert f"plus every film from source split(s) val (data.keep_in_val=[val]); {n_val} films" in (
        card
    )
    assert (
        "Threshold chosen on: the 16 films of that val split with threshold.films="
        "{source_split: val} (8 NORMAL, 8 PNEUMONIA) (threshold.criterion=youden)." in card
    )
    # Its interval is over those 16 films alone (their patients resampled).
    low, high = metrics["val/threshold_ci_low"], metrics["val/threshold_ci_high"]
    assert low <= expected <= high
    assert f"the rule chose between {low:.4f} and {high:.4f}" in card


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_a_threshold_filter_no_val_film_meets_is_refused_before_training(
    kaggle_like_folders: Path, tmp_path: Path
) -> None:
    # The official split's val films all come from the val folder: none from train.
    done = run_train(
        [
            *FAST,
            f"data.root={kaggle_like_folders}",
            f"paths.log_dir={tmp_path}",
            "threshold.films={source_split: train}",
        ],
        tmp_path,
    )
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "threshold.films={source_split: train} matches no val film (0 of 16" in line
    assert "data.keep_in_val=[val]" in line
    assert "Epoch 0" not in done.stdout + done.stderr
