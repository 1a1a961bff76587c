"""Loading a checkpoint never imports a module the user did not name (issue 20 row 1).

A checkpoint of plain data passes ``weights_only`` loading, but its ``hyper_parameters.net.name``
may be an import path (``module:function``, ``torch.hub:load`` with ``source: local``): building
that network would import the module and run its code. Predict, export, eval and an ensemble
member refuse it (exit 2) unless the user passes the same path as ``model.net.name=``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.console import run_script
from torch import nn

PREPROCESSING = {"image_size": 32, "resize": "squash", "equalize": "none", "interpolation": "area"}
POINT = {"threshold": 0.5, "criterion": "youden", "floor": None, "chosen_on": "val"}


def _tiny_net(num_outputs: int = 1) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, num_outputs))


def _user_code(folder: Path, marker: Path) -> Path:
    """A module whose import leaves ``marker`` behind, and a torch.hub folder doing the same."""
    folder.mkdir(parents=True, exist_ok=True)
    body = (
        "from pathlib import Path\n"
        "from torch import nn\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "def build(num_outputs=1, **kwargs):\n"
        "    pool = nn.AdaptiveAvgPool2d(1)\n"
        "    return nn.Sequential(pool, nn.Flatten(), nn.Linear(1, num_outputs))\n"
    )
    (folder / "marker_net.py").write_text(body)
    hub = folder / "hub"
    hub.mkdir(exist_ok=True)
    (hub / "hubconf.py").write_text(body.replace("def build", "def tiny"))
    return folder


def _checkpoint(path: Path, net: dict) -> Path:
    state = {f"net.{key}": value for key, value in _tiny_net().state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"net": net, "class_names": ["NORMAL", "PNEUMONIA"]},
            "cxrnet_inference": {"operating_point": POINT, "preprocessing": PREPROCESSING},
        },
        path,
    )
    return path


@pytest.fixture
def setup(tmp_path: Path, synthetic_root: Path) -> dict:
    marker = tmp_path / "module-was-imported"
    code = _user_code(tmp_path / "src", marker)
    ckpt = _checkpoint(tmp_path / "plain.ckpt", {"name": "marker_net:build"})
    hub_ckpt = _checkpoint(
        tmp_path / "hub.ckpt",
        {"name": "torch.hub:load", "repo_or_dir": str(code / "hub"), "model": "tiny"}
        | {"source": "local", "trust_repo": True},
    )
    manifest = tmp_path / "ensemble.json"
    manifest.write_text(
        json.dumps(
            {
                "kind": "cxrnet-ensemble",
                "members": ["plain.ckpt"],
                "folds": [0],
                "combination": "mean_probability",
                "operating_point": POINT,
                "preprocessing": PREPROCESSING,
            }
        )
    )
    film = next((synthetic_root / "test" / "NORMAL").iterdir())
    return {
        "tmp": tmp_path,
        "marker": marker,
        "env": {"PYTHONPATH": str(code)},
        "ckpt": ckpt,
        "hub": hub_ckpt,
        "manifest": manifest,
        "film": film,
    }


def _commands(s: dict, model: Path) -> dict[str, list[str]]:
    tmp = s["tmp"]
    return {
        "cxrnet-predict": [f"ckpt_path={model}", f"input={s['film']}", f"output={tmp / 'p.csv'}"],
        "cxrnet-export": [f"ckpt_path={model}", f"output={tmp / 'model.onnx'}"],
        "cxrnet-eval": [f"ckpt_path={model}"],
    }


@pytest.mark.parametrize(
    "command",
    ["cxrnet-predict", "cxrnet-export", pytest.param("cxrnet-eval", marks=pytest.mark.slow)],
)
def test_a_checkpoint_naming_an_import_path_is_refused_without_importing_it(setup, command):
    # Before: the module was imported and its factory called with the checkpoint's arguments.
    args = _commands(setup, setup["ckpt"])[command]
    done = run_script(
        command, [*args, f"paths.log_dir={setup['tmp'] / 'logs'}"], setup["tmp"], env=setup["env"]
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert not setup["marker"].exists()
    assert f"error: checkpoint {setup['ckpt']}: its network 'marker_net:build'" in done.stderr
    assert "model.net.name=marker_net:build" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("which", ["hub", "manifest"])
def test_torch_hub_and_ensemble_members_are_refused_too(setup, which):
    args = _commands(setup, setup[which])["cxrnet-predict"]
    done = run_script(
        "cxrnet-predict",
        [*args, f"paths.log_dir={setup['tmp'] / 'logs'}"],
        setup["tmp"],
        env=setup["env"],
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert not setup["marker"].exists()
    stored = "torch.hub:load" if which == "hub" else "marker_net:build"
    assert f"its network {stored!r} is an import path" in done.stderr
    assert not (setup["tmp"] / "p.csv").exists()


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_the_user_allows_the_import_path_by_naming_it(setup):
    tmp = setup["tmp"]
    allow = "model.net.name=marker_net:build"
    commands = _commands(setup, setup["ckpt"])
    done = run_script(
        "cxrnet-predict",
        [*commands["cxrnet-predict"], allow, f"paths.log_dir={tmp / 'logs'}"],
        tmp,
        env=setup["env"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert setup["marker"].exists()
    assert (tmp / "p.csv").read_text().count("\n") == 2  # header and the one film
    done = run_script(
        "cxrnet-export",
        [*commands["cxrnet-export"], allow, f"paths.log_dir={tmp / 'logs'}"],
        tmp,
        env=setup["env"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp / "model.onnx").is_file()
    # Another name than the stored one is no permission for the stored one.
    done = run_script(
        "cxrnet-predict",
        [*commands["cxrnet-predict"], "model.net.name=other:x", f"paths.log_dir={tmp / 'logs'}"],
        tmp,
        env=setup["env"],
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "the stored network is 'marker_net:build'" in done.stderr
