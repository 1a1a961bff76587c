"""A YAML tag in an override or in a config file a user passes is one ``error:`` line naming the
override or the file and the fix, exit 2, and nothing runs (issue 20 row 14). Before: Hydra's
parser error with exit 1 for an override, a ``ConstructorError`` traceback with exit 1 for a file.
``HYDRA_FULL_ERROR=1`` keeps Hydra's traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.console import run_script

# Every console script that takes Hydra overrides; compare and ensemble take plain arguments.
HYDRA_SCRIPTS = ["cxrnet-train", "cxrnet-eval", "cxrnet-predict", "cxrnet-export", "cxrnet-search"]


def _one_error_line(done, tmp_path: Path) -> str:
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert not (tmp_path / "marker").exists()
    return errors[0]


def _config_dir(tmp_path: Path, group: str, body: str) -> Path:
    folder = tmp_path / "my_conf"
    (folder / group).mkdir(parents=True)
    (folder / group / "evil.yaml").write_text(f"# @package _global_\n{body}")
    return folder


@pytest.mark.parametrize("script", HYDRA_SCRIPTS)
def test_a_yaml_tag_in_an_override_is_one_error_line(tmp_path: Path, script: str) -> None:
    override = f"data.root=!!python/object/apply:os.system [touch {tmp_path / 'marker'}]"
    done = run_script(script, [override, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    line = _one_error_line(done, tmp_path)
    assert f"the override '{override}' cannot be parsed" in line
    assert "a YAML tag (!!...) is not allowed on the command line" in line
    assert "give the plain value" in line
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("script", "group", "choice"),
    [
        ("cxrnet-train", "experiment", "experiment=evil"),
        *[(script, "mine", "+mine=evil") for script in HYDRA_SCRIPTS],
    ],
)
def test_a_yaml_tag_in_a_config_file_is_one_error_line_naming_the_file(
    tmp_path: Path, script: str, group: str, choice: str
) -> None:
    body = f'data:\n  root: !!python/object/apply:os.system ["touch {tmp_path / "marker"}"]\n'
    folder = _config_dir(tmp_path, group, body)
    done = run_script(
        script,
        ["--config-dir", str(folder), choice, f"paths.log_dir={tmp_path / 'logs'}"],
        tmp_path,
    )
    line = _one_error_line(done, tmp_path)
    assert f"{folder / group / 'evil.yaml'}, line 3: " in line
    assert "the YAML tag !!python/object/apply:os.system is not allowed" in line
    assert "remove the tag" in line
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("tag", "shown"),
    [("!!python/name:os.system ''", "!!python/name:os.system"), ("!mine 3", "!mine")],
)
def test_any_unknown_tag_in_a_config_file_is_named(tmp_path: Path, tag: str, shown: str) -> None:
    folder = _config_dir(tmp_path, "experiment", f"trainer:\n  max_epochs: {tag}\n")
    done = run_script("cxrnet-train", ["--config-dir", str(folder), "experiment=evil"], tmp_path)
    line = _one_error_line(done, tmp_path)
    assert f"{folder / 'experiment' / 'evil.yaml'}, line 3: the YAML tag {shown} is" in line


def test_broken_yaml_in_a_config_file_is_one_error_line(tmp_path: Path) -> None:
    folder = _config_dir(tmp_path, "experiment", "trainer:\n  max_epochs: [3\n")
    done = run_script("cxrnet-train", ["--config-dir", str(folder), "experiment=evil"], tmp_path)
    line = _one_error_line(done, tmp_path)
    assert str(folder / "experiment" / "evil.yaml") in line
    assert "not valid YAML" in line and "fix the file's syntax" in line


def test_a_yaml_tag_in_a_sweep_is_refused_before_any_job(tmp_path: Path) -> None:
    override = f"data.root=!!python/name:os.system,{tmp_path}"
    done = run_script(
        "cxrnet-train", ["-m", override, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path
    )
    assert f"the override '{override}' cannot be parsed" in _one_error_line(done, tmp_path)
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("where", ["override", "file"])
def test_full_error_keeps_the_traceback(tmp_path: Path, where: str) -> None:
    if where == "override":
        args = [f"data.root=!!python/object/apply:os.system [touch {tmp_path / 'marker'}]"]
        expected = "OverrideParseException"
    else:
        body = f'data:\n  root: !!python/object/apply:os.system ["touch {tmp_path / "marker"}"]\n'
        args = ["--config-dir", str(_config_dir(tmp_path, "experiment", body)), "experiment=evil"]
        expected = "ConstructorError"
    done = run_script("cxrnet-train", args, tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 1
    assert "Traceback" in done.stderr and expected in done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert not (tmp_path / "marker").exists()
