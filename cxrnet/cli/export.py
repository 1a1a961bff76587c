"""``cxrnet-export ckpt_path=<.ckpt | ensemble.json> format=onnx|torchscript``: one self-contained
file with the threshold and preprocessing in its metadata (an ensemble: its members averaged)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from cxrnet.cli.exit_codes import brief_errors
from cxrnet.cli.hydra_support import (
    CONFIG_PATH,
    HYDRA_VERSION,
    allowed_network,
    check_types,
    job_overrides,
    run_hydra,
)
from cxrnet.config import register_resolvers, save_resolved_config
from cxrnet.runs import RunRecorder


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="export")
@brief_errors
def _hydra_main(cfg: DictConfig) -> None:
    check_types(cfg)  # before torch: a value of the wrong kind is one line
    from cxrnet.inference.export import export_checkpoint  # torch, once the config composed

    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    ckpt = Path(to_absolute_path(str(cfg.ckpt_path)))
    output = Path(to_absolute_path(str(cfg.output))) if cfg.get("output") else None
    with RunRecorder(output_dir, "cxrnet-export", job_overrides()) as recorder:
        written = export_checkpoint(
            ckpt, output, cfg.format, allowed_network(cfg), overwrite=bool(cfg.overwrite)
        )
        recorder.complete({}, paths={"ckpt_path": str(ckpt), "exported": str(written)})
    print(f"exported: {written}")


def main() -> None:
    register_resolvers()
    run_hydra(_hydra_main)


if __name__ == "__main__":
    main()
