"""What cxrnet-predict input= may name, and the errors for what it may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrnet.inference.inputs import list_inputs
from cxrnet.user_errors import DataError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_a_folder_is_searched_recursively_in_sorted_order_without_hidden_files(tmp_path) -> None:
    b = _touch(tmp_path / "films" / "b.JPG")
    a = _touch(tmp_path / "films" / "sub" / "a.png")
    _touch(tmp_path / "films" / ".hidden.jpeg")
    _touch(tmp_path / "films" / "__MACOSX" / "c.jpeg")
    _touch(tmp_path / "films" / "notes.txt")
    assert list_inputs(tmp_path / "films") == sorted([a, b])


def test_lists_and_manifests_keep_their_order_and_resolve_relative_paths(tmp_path) -> None:
    (tmp_path / "list.txt").write_text("# films to read\nz.jpeg\n\n/abs/y.png\n")
    assert list_inputs(tmp_path / "list.txt") == [tmp_path / "z.jpeg", Path("/abs/y.png")]
    (tmp_path / "m.csv").write_text("Path,label\nz.jpeg,NORMAL\na.jpeg,\n")
    assert list_inputs(tmp_path / "m.csv") == [tmp_path / "z.jpeg", tmp_path / "a.jpeg"]
    image = _touch(tmp_path / "one.jpeg")
    assert list_inputs(image) == [image]


def test_bad_inputs_name_the_path_and_the_fix(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist; pass input="):
        list_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_inputs(tmp_path / "empty")
    (tmp_path / "m.csv").write_text("file,label\na.jpeg,NORMAL\n")
    with pytest.raises(DataError, match="no 'path' column"):
        list_inputs(tmp_path / "m.csv")
    _touch(tmp_path / "model.bin")
    with pytest.raises(DataError, match=r"cannot tell what \.bin holds"):
        list_inputs(tmp_path / "model.bin")
