"""A model scored on films it already saw (issue 32 item 1): through the console scripts, a
model trained on a synthetic set, then cxrnet-eval on (a) the very films, (b) byte-identical
copies under other names, (c) half seen and half new, and cxrnet-predict marking seen films."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers.console import QUICK, run_folder, run_script, run_train

pytestmark = pytest.mark.slow  # a training run and five scoring runs


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("seen")
    done = run_train(
        [*QUICK, f"data.root={synthetic_root}", f"paths.log_dir={root / 'logs'}"], root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = run_folder(done.stdout)
    best = json.loads((run / "metrics.json").read_text())["paths"]["best_checkpoint"]
    return {"root": root, "ckpt": best}


def _films(synthetic_root: Path, split: str, per_class: int | None = None) -> list[Path]:
    """The split's films, or ``per_class`` of each class."""
    return [
        film
        for klass in ("NORMAL", "PNEUMONIA")
        for film in sorted((synthetic_root / split / klass).glob("*.jpeg"))[:per_class]
    ]


def _site(folder: Path, films: list[Path], rename: bool = False) -> Path:
    """A test-only site: class folders with copies of ``films`` (renamed: other names)."""
    for i, film in enumerate(films):
        target = folder / film.parent.name / (f"copy_{i:03d}.jpeg" if rename else film.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(film, target)
    return folder


def _eval(trained: dict, site: Path, name: str, *extra: str):
    out = trained["root"] / name
    args = [f"ckpt_path={trained['ckpt']}", f"data.root={site}", f"hydra.run.dir={out}", *extra]
    return run_script("cxrnet-eval", [*args, "report.pointing_game=false"], trained["root"]), out


def test_the_very_films_are_all_seen_and_keep_scores_them_saying_so(
    trained: dict, synthetic_root: Path
) -> None:
    train = _films(synthetic_root, "train")
    manifest = trained["root"] / "same.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([str(film), film.parent.name] for film in train)
    # By default the seen films are left out: here that is every film, and nothing is scored.
    done, _ = _eval(trained, manifest, "same")
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert "every film of the test split was seen by the model" in line
    done, out = _eval(trained, manifest, "same_keep", "data.seen_films=keep")
    assert done.returncode == 0, done.stderr[-3000:]
    card = (out / "report.md").read_text()
    n = len(train)
    assert (
        f"{n} of these {n} films were seen by the model ({n} trained the model) and are scored "
        "with the rest (data.seen_films=keep)"
    ) in card
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["site/seen/trained"] == n and metrics["site/seen/total"] == n


def test_copies_under_other_names_are_caught_and_error_stops_naming_the_count(
    trained: dict, synthetic_root: Path
) -> None:
    train = _films(synthetic_root, "train", per_class=5)
    site = _site(trained["root"] / "copies", train, rename=True)
    done, out = _eval(trained, site, "copies", "data.seen_films=error")
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert f"error: 10 of the 10 films in the test split of {site} were seen by the model" in line
    assert "(10 trained the model)" in line and "data.seen_films=exclude" in line
    with (out / "seen_films.csv").open(newline="") as handle:
        listed = list(csv.DictReader(handle))
    assert len(listed) == 10 and {row["role"] for row in listed} == {"trained the model"}


def test_half_seen_half_new_scores_the_new_half_and_predict_marks_the_seen(
    trained: dict, synthetic_root: Path
) -> None:
    seen = _films(synthetic_root, "train", per_class=4)
    new = _films(synthetic_root, "test")
    site = _site(trained["root"] / "half", seen, rename=True)
    site = _site(site, new)
    done, out = _eval(trained, site, "half")
    assert done.returncode == 0, done.stderr[-3000:]
    n = len(seen) + len(new)
    card = (out / "report.md").read_text()
    assert (
        f"8 of these {n} films were seen by the model (8 trained the model): they are left "
        f"out of every number below (data.seen_films=exclude), which are of the other {len(new)}."
    ) in card
    with (out / "predictions_test.csv").open(newline="") as handle:
        scored = [row["file"] if "file" in row else row["path"] for row in csv.DictReader(handle)]
    assert len(scored) == len(new) and not any("copy_" in name for name in scored)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["site/seen/trained"] == 8
    # Predict scores every film and says which ones the model saw.
    output = trained["root"] / "half.csv"
    args = [f"ckpt_path={trained['ckpt']}", f"input={site}", f"output={output}"]
    done = run_script(
        "cxrnet-predict", [*args, f"paths.log_dir={trained['root']}"], trained["root"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    marks = {Path(row["path"]).name: row["seen"] for row in rows}
    assert {name for name, mark in marks.items() if mark} == {
        f"copy_{i:03d}.jpeg" for i in range(8)
    }
    assert {mark for mark in marks.values() if mark} == {"trained the model"}


def test_a_site_the_model_never_saw_says_so(trained: dict, synthetic_root: Path) -> None:
    site = _site(trained["root"] / "new", _films(synthetic_root, "test"))
    done, out = _eval(trained, site, "new")
    assert done.returncode == 0, done.stderr[-3000:]
    n = len(_films(synthetic_root, "test"))
    assert (
        f"None of these {n} films was seen by the model: none matches, by its pixels or its "
        "patient, a film that trained it, chose its checkpoint or its threshold."
    ) in (out / "report.md").read_text()
    assert not (out / "seen_films.csv").exists()
