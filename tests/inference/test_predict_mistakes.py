"""cxrnet-predict and cxrnet-export on a model they cannot use end with one ``error:`` line and
exit 2 that says what to do (issue 20 row 14): a 3-class (subtype) checkpoint, explain=true on an
exported ``.onnx``, an ``.onnx`` without cxrnet's metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.console import run_script
from test_inference_safety import plain_checkpoint

SUBTYPES = ("NORMAL", "BACTERIA", "VIRUS")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict[str, Path]:
    """A binary and a 3-class checkpoint, the binary one exported to ONNX, and that export with
    its cxrnet metadata stripped; some films to score."""
    folder = tmp_path_factory.mktemp("models")
    films = folder / "films"
    films.mkdir()
    for film in sorted((synthetic_root / "test" / "NORMAL").iterdir())[:2]:
        (films / film.name).write_bytes(film.read_bytes())
    made = {
        "films": films,
        "binary": plain_checkpoint(folder / "binary.ckpt"),
        "subtype": plain_checkpoint(folder / "subtype.ckpt", class_names=SUBTYPES),
    }
    if _has_onnx():
        import onnx

        exported = folder / "model.onnx"
        done = run_script(
            "cxrnet-export",
            [f"ckpt_path={made['binary']}", f"output={exported}", f"paths.log_dir={folder}/logs"],
            folder,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        stripped = onnx.load(str(exported))
        del stripped.metadata_props[:]
        onnx.save(stripped, str(folder / "bare.onnx"))
        made |= {"onnx": exported, "bare onnx": folder / "bare.onnx"}
    return made


def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


CASES = {
    # Before: exit 2, but the hint (a stamped checkpoint, threshold.rechoose) could not help.
    "predict a 3-class checkpoint": (
        "cxrnet-predict",
        "subtype",
        [],
        ["3-class model", "need a binary (normal/pneumonia) checkpoint", "data.task=binary"],
    ),
    "export a 3-class checkpoint": (
        "cxrnet-export",
        "subtype",
        [],
        ["3-class model", "need a binary (normal/pneumonia) checkpoint", "data.task=binary"],
    ),
    "explain on an onnx": (
        "cxrnet-predict",
        "onnx",
        ["explain=true"],
        ["explain=true needs a checkpoint (.ckpt)"],
    ),
    "onnx without metadata": (
        "cxrnet-predict",
        "bare onnx",
        [],
        ["has no 'cxrnet' metadata", "cxrnet-export"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_unusable_model_is_one_error_line_and_exit_2(tmp_path, models, case) -> None:
    command, model, extra, messages = CASES[case]
    if model not in models:
        pytest.skip("the onnx extra is not installed")
    args = [f"ckpt_path={models[model]}", *extra, f"paths.log_dir={tmp_path / 'logs'}"]
    if command == "cxrnet-predict":
        args += [f"input={models['films']}", f"output={tmp_path / 'p.csv'}"]
    else:
        args += [f"output={tmp_path / 'model.onnx'}"]
    done = run_script(command, args, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    for message in messages:
        assert message in line
    assert "threshold.rechoose" not in line
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "model.onnx").exists()
