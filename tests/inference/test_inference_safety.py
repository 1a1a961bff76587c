"""cxrnet-predict and cxrnet-export never destroy what the user gave them (issue 20 rows 3, 4, 13
and 14): outputs are written through a temporary file, an output that is one of the inputs, an
existing file without overwrite=true or a bad setting is refused before any file is touched, and
every input the user named gets its row."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.console import run_script

from cxrnet.data.decode import DecodeParams
from cxrnet.inference.predict import predict_files
from cxrnet.models.registry import create_model

PREPROCESSING = {"image_size": 32, "resize": "squash", "equalize": "none", "interpolation": "area"}
NET = {"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 4, 4], "hidden": 8}


def plain_checkpoint(
    path: Path,
    threshold: float | None = 0.4,
    class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA"),
) -> Path:
    """A small stamped checkpoint of a built-in network, as cxrnet-train writes one."""
    outputs = 1 if len(class_names) == 2 else len(class_names)
    kwargs = {key: value for key, value in NET.items() if key != "name"}
    net = create_model(NET["name"], num_outputs=outputs, **kwargs)
    point = None
    if threshold is not None:
        point = {"threshold": threshold, "criterion": "youden", "floor": None, "chosen_on": "val"}
    torch.save(
        {
            "state_dict": {f"net.{key}": value for key, value in net.state_dict().items()},
            "hyper_parameters": {"net": NET, "class_names": list(class_names)},
            "cxrnet_inference": {"operating_point": point, "preprocessing": PREPROCESSING},
        },
        path,
    )
    return path


@pytest.fixture
def films(tmp_path: Path, synthetic_root: Path) -> Path:
    folder = tmp_path / "films"
    folder.mkdir()
    for film in sorted((synthetic_root / "test" / "NORMAL").iterdir())[:3]:
        shutil.copy(film, folder / film.name)
    return folder


def export(tmp_path: Path, *args: str):
    return run_script("cxrnet-export", [*args, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)


def predict(tmp_path: Path, *args: str, cwd: Path | None = None):
    return run_script(
        "cxrnet-predict", [*args, f"paths.log_dir={tmp_path / 'logs'}"], cwd or tmp_path
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def constant_scorer():
    class Constant:
        preprocessing = DecodeParams(**PREPROCESSING)
        operating_point = None
        backend = "test"

        def __call__(self, images: np.ndarray) -> np.ndarray:
            return np.full(len(images), 0.7, dtype=np.float32)

    return Constant()


# --- row 3: the output is never one of the inputs, and is replaced whole or not at all ---------


# One console run each: the default tier keeps the first, the slow tier the rest.
@pytest.mark.parametrize(
    "which",
    ["image", *(pytest.param(w, marks=pytest.mark.slow) for w in ("list", "checkpoint"))],
)
def test_an_output_that_is_one_of_the_inputs_is_refused_and_left_alone(tmp_path, films, which):
    # Before: the output was opened for writing first, so the image or list was destroyed.
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    image = sorted(films.iterdir())[0]
    listing = tmp_path / "films.txt"
    listing.write_text("\n".join(str(p) for p in sorted(films.iterdir())) + "\n")
    source = {"image": image, "list": listing, "checkpoint": films}[which]
    victim = {"image": image, "list": listing, "checkpoint": ckpt}[which]
    before = victim.read_bytes()
    done = predict(tmp_path, f"ckpt_path={ckpt}", f"input={source}", f"output={victim}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"error: output={victim} is one of the inputs" in done.stderr
    assert victim.read_bytes() == before


def test_the_default_output_is_refused_when_the_input_is_predictions_csv(tmp_path, films):
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    work = tmp_path / "work"
    work.mkdir()
    manifest = work / "predictions.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in sorted(films.iterdir())))
    before = manifest.read_bytes()
    done = predict(tmp_path, f"ckpt_path={ckpt}", "input=predictions.csv", cwd=work)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "is one of the inputs" in done.stderr
    assert manifest.read_bytes() == before


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("batch_size=0", "batch_size=0 must be a whole number >= 1"),
        ("num_workers=-1", "num_workers=-1 must be a whole number >= 0"),
    ],
)
def test_a_bad_setting_is_refused_before_the_output_is_touched(tmp_path, films, setting, message):
    # Before: batch_size=0 emptied the existing output, then failed with a traceback.
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    output = tmp_path / "earlier.csv"
    output.write_text("path,probability\nkept.png,0.9\n")
    done = predict(tmp_path, f"ckpt_path={ckpt}", f"input={films}", f"output={output}", setting)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"error: {message}" in done.stderr and "Traceback" not in done.stderr
    assert output.read_text() == "path,probability\nkept.png,0.9\n"


def test_a_run_that_fails_midway_leaves_the_earlier_output_whole(tmp_path, films) -> None:
    class FailsOnSecondBatch:
        preprocessing = DecodeParams(**PREPROCESSING)
        operating_point = None
        backend = "test"
        calls = 0

        def __call__(self, images: np.ndarray) -> np.ndarray:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("out of memory")
            return np.full(len(images), 0.7, dtype=np.float32)

    output = tmp_path / "predictions.csv"
    output.write_text("earlier\n")
    paths = sorted(films.iterdir())
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_files(paths, FailsOnSecondBatch(), output, batch_size=1, progress=False)
    assert output.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["films", "predictions.csv"]
    summary = predict_files(paths, constant_scorer(), output, batch_size=2, progress=False)
    assert len(read_rows(output)) == len(summary.rows) == 3


# --- row 4: export never replaces the checkpoint, and replaces a file only when asked -------


def test_export_onto_the_checkpoint_itself_is_refused(tmp_path) -> None:
    # Before: the trained checkpoint was replaced by the exported file.
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    before = ckpt.read_bytes()
    done = export(tmp_path, f"ckpt_path={ckpt}", f"output={ckpt}", "format=torchscript")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"error: output={ckpt} is the model being exported" in done.stderr
    assert ckpt.read_bytes() == before


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_an_existing_export_is_replaced_only_with_overwrite(tmp_path) -> None:
    # Before: an existing file was overwritten silently.
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    output = tmp_path / "deployed.pt"
    output.write_bytes(b"the file in production")
    args = [f"ckpt_path={ckpt}", f"output={output}", "format=torchscript"]
    done = export(tmp_path, *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"error: output={output} exists; pass overwrite=true" in done.stderr
    assert output.read_bytes() == b"the file in production"
    done = export(tmp_path, *args, "overwrite=true")
    assert done.returncode == 0, done.stderr[-3000:]
    extra = {"cxrnet.json": ""}
    torch.jit.load(str(output), _extra_files=extra)
    assert json.loads(extra["cxrnet.json"])["operating_point"]["threshold"] == 0.4
    assert not list(tmp_path.glob(".deployed.pt.partial-*"))  # written through a rename


# --- row 13: one row per input the user gave --------------------------------------------------


def test_a_dangling_symlink_and_a_symlink_loop_get_their_rows(tmp_path, films) -> None:
    # Before: both were dropped without a row, exit 0 (training lists them in ignored.csv).
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    (films / "gone.jpeg").symlink_to(tmp_path / "deleted.jpeg")
    (films / "loop.jpeg").symlink_to(films / "loop.jpeg")
    output = tmp_path / "p.csv"
    done = predict(tmp_path, f"ckpt_path={ckpt}", f"input={films}", f"output={output}")
    assert done.returncode == 3, done.stderr[-3000:]
    rows = {Path(row["path"]).name: row for row in read_rows(output)}
    assert len(rows) == 5
    assert "not found" in rows["gone.jpeg"]["error"] and not rows["gone.jpeg"]["probability"]
    assert "symbolic links" in rows["loop.jpeg"]["error"]
    assert sum(1 for row in rows.values() if row["probability"]) == 3


def test_an_empty_path_in_a_manifest_gets_its_row(tmp_path, films) -> None:
    # Before: the row was dropped silently and the other films scored, exit 0.
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    first, second = sorted(films.iterdir())[:2]
    manifest = tmp_path / "films.csv"
    manifest.write_text(f"path,site\n{first},a\n,b\n{second},c\n")
    output = tmp_path / "p.csv"
    done = predict(tmp_path, f"ckpt_path={ckpt}", f"input={manifest}", f"output={output}")
    assert done.returncode == 3, done.stderr[-3000:]
    rows = read_rows(output)
    assert [row["path"] for row in rows] == [str(first), f"{manifest}:3", str(second)]
    assert rows[1]["error"].startswith(f"empty path on line 3 of {manifest}")
    assert rows[0]["probability"] and rows[2]["probability"] and not rows[1]["probability"]


# --- row 14: a user's mistake is one error line and exit 2, not a traceback -----------------


def _mistakes(tmp_path: Path, films: Path) -> dict[str, tuple[str, list[str], str]]:
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "out-folder").mkdir()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf at all")
    base = [f"ckpt_path={ckpt}", f"input={films}"]
    return {
        "output under a file": (
            "cxrnet-predict",
            [*base, f"output={blocker / 'out.csv'}"],
            f"{blocker} is a file, not a folder",
        ),
        "output onto a folder": (
            "cxrnet-predict",
            [*base, f"output={tmp_path / 'out-folder'}"],
            "is a folder; name a CSV file",
        ),
        "output in /proc": ("cxrnet-predict", [*base, "output=/proc/out.csv"], "cannot write"),
        "cuda without a GPU": ("cxrnet-predict", [*base, "device=cuda"], "no CUDA GPU is visible"),
        "export format=bogus": (
            "cxrnet-export",
            [f"ckpt_path={ckpt}", "format=bogus"],
            "format=bogus is not a format",
        ),
        "corrupt onnx": (
            "cxrnet-predict",
            [f"ckpt_path={corrupt}", f"input={films}"],
            "is not a readable ONNX model",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "output under a file",
        "cuda without a GPU",
        "export format=bogus",
        # Console runs the slow tier keeps (the default tier under 5 minutes).
        *(
            pytest.param(case, marks=pytest.mark.slow)
            for case in ("output onto a folder", "output in /proc", "corrupt onnx")
        ),
    ],
)
def test_a_user_mistake_is_one_error_line_and_exit_2(tmp_path, films, case) -> None:
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if case == "corrupt onnx":
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    if case == "output in /proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    command, args, message = _mistakes(tmp_path, films)[case]
    done = run_script(command, [*args, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert message in line


def test_a_checkpoint_without_a_threshold_says_it_used_one_half(tmp_path, films) -> None:
    # Before: only an info log line said so; the output CSV and the note now both do.
    ckpt = plain_checkpoint(tmp_path / "last.ckpt", threshold=None)
    output = tmp_path / "p.csv"
    done = predict(tmp_path, f"ckpt_path={ckpt}", f"input={films}", f"output={output}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "note: last.ckpt stores no decision threshold" in done.stderr
    assert "called at 0.5" in done.stderr
    assert {row["threshold"] for row in read_rows(output)} == {"0.500000"}
