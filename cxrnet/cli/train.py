"""``cxrnet-train``: fit, pick the best checkpoint on validation, test it, write metrics.json.

The run itself is ``cxrnet.training.run``; this entry point composes the config, tells the run
how it was launched and maps errors to exit codes.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cxrnet.cli.exit_codes import brief_errors
from cxrnet.cli.hydra_support import (
    CONFIG_PATH,
    HYDRA_VERSION,
    job_overrides,
    reference_config,
    run_hydra,
)
from cxrnet.config import fix_run_stamp, register_resolvers
from cxrnet.training.ddp import launch_arguments
from cxrnet.training.preflight import preflight_train


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="train")
@brief_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    # A typo or a value of the wrong kind ends here, before torch and Lightning.
    preflight_train(cfg, job_overrides(), reference_config("train"))
    from cxrnet.training.run import Launch, run

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    launch = Launch(
        overrides=tuple(job_overrides()),
        sweep_dir=str(hydra_cfg.sweep.dir) if multirun else None,
        rerunnable=True,
        checked=True,
    )
    record = run(cfg, launch=launch)
    # Sweepers minimise or maximise what the app returns: the monitored validation metric.
    value = record.metrics.get(cfg.monitor)
    return None if value is None else float(value)


def main() -> None:
    register_resolvers()
    arguments = launch_arguments(sys.argv[1:], os.environ)
    fix_run_stamp(arguments)
    sys.argv = [sys.argv[0], *arguments]
    run_hydra(_hydra_main)


if __name__ == "__main__":
    main()
