"""``cxrnet-eval ckpt_path=...``: the evaluation pass and report for a checkpoint, on its own data
or on any folder in the dataset layout (``data=chest_xray data.root=...``)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cxrnet.cli.exit_codes import brief_errors
from cxrnet.cli.hydra_support import (
    CONFIG_PATH,
    HYDRA_VERSION,
    check_types,
    job_overrides,
    run_hydra,
)
from cxrnet.config import register_resolvers, save_resolved_config
from cxrnet.evaluation.metric_names import in_console_summary
from cxrnet.runs import Override, RunRecorder

log = logging.getLogger(__name__)


def _explicit_data_keys() -> set[str]:
    """``data.<key>`` settings given on the command line, which win over the checkpoint's."""
    if not HydraConfig.initialized():
        return set()
    keys = set()
    for line in HydraConfig.get().overrides.task:
        key = Override.parse(line).key.lstrip("+~")
        if key.startswith("data."):
            keys.add(key.removeprefix("data."))
    return keys


def _data_group_chosen() -> bool:
    """``data=<group>`` on the command line: that group's data, its root or synthetic data."""
    return HydraConfig.initialized() and bool(HydraConfig.get().runtime.choices.get("data"))


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="eval")
@brief_errors
def _hydra_main(cfg: DictConfig) -> None:
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    ckpt_path = str(Path(cfg.ckpt_path).expanduser())
    with RunRecorder(output_dir, "cxrnet-eval", job_overrides()) as recorder:
        check_types(cfg)  # a value of the wrong kind: a failed record naming it, nothing read
        recorder.update(paths={"ckpt_path": ckpt_path})
        # Here, not at the top: `cxrnet-eval --help` and usage errors need no torch or Lightning.
        from cxrnet.passes.checkpoint_eval import evaluate_checkpoint

        recorder.complete(evaluate_checkpoint(cfg, _explicit_data_keys(), _data_group_chosen()))
    shown = {k: v for k, v in recorder.record.metrics.items() if in_console_summary(k)}
    for key, value in sorted(shown.items()):
        print(f"{key}: {value:.4f}")
    if (output_dir / "report.md").is_file():
        print(f"report: {output_dir / 'report.md'}")
    print(f"run folder: {output_dir}")


def main() -> None:
    register_resolvers()
    run_hydra(_hydra_main)


if __name__ == "__main__":
    main()
