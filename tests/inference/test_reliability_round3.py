"""Issue 31 (reliability round 3), the rows done so far: each through the console script where a
user meets it. Row 13: an export's name matches its format. Row 15: a full disk's two sizes read
differently when they differ."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_inference_safety import export, plain_checkpoint

from cxrnet.data.cache_entry import megabytes
from cxrnet.inference.export import export_checkpoint
from cxrnet.user_errors import ConfigError


def test_row_13_an_export_named_for_the_other_format_is_refused(tmp_path: Path) -> None:
    # Before: a TorchScript file was written under an .onnx name; predict failed on it later.
    ckpt = plain_checkpoint(tmp_path / "model.ckpt")
    output = tmp_path / "model.onnx"
    done = export(tmp_path, f"ckpt_path={ckpt}", f"output={output}", "format=torchscript")
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: output={output} does not end in .pt or .pth, the suffix of a format=torchscript "
        "file; name it model.pt, or pass the format its name says"
    ]
    assert "Traceback" not in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "logs") == [
        "model.ckpt"
    ]  # nothing written
    # The other way round, through the library call the console script makes.
    with pytest.raises(ConfigError, match=r"does not end in \.onnx, .* name it model\.onnx"):
        export_checkpoint(ckpt, tmp_path / "model.pt", "onnx")
    assert not (tmp_path / "model.pt").exists()


def test_row_15_the_needed_and_free_sizes_read_differently_when_they_differ() -> None:
    # Before: "needs 0.1 MB and 0.1 MB is free".
    assert megabytes(123_000, 98_000) == ["0.12 MB", "0.10 MB"]
    assert megabytes(400_000, 1_000_000) == ["0.4 MB", "1.0 MB"]
    assert megabytes(100_001, 100_000) == ["0.100001 MB", "0.100000 MB"]
    assert megabytes(5, 5) == ["0.0 MB", "0.0 MB"]  # equal sizes may read equal
