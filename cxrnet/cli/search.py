"""``cxrnet-search``: an Optuna study over the train config, one cxrnet-train run per trial.

    cxrnet-search data.root=/data/chest_xray trainer.max_epochs=10 hparams_search.n_trials=40

How trials are composed, pruned, retried and shared between workers: ``cxrnet.search.runner``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cxrnet.cli.exit_codes import brief_errors
from cxrnet.cli.hydra_support import CONFIG_PATH, HYDRA_VERSION, check_types, run_hydra
from cxrnet.config import register_resolvers


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="search")
@brief_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    check_types(cfg)  # before optuna and torch: a value of the wrong kind is one line
    import optuna  # with torch and Lightning, once the config is good

    from cxrnet.search.runner import search

    hydra_cfg = HydraConfig.get()
    # Optuna's own lines ("Trial 3 finished with value ...") into Hydra's console and log file.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    config_name = hydra_cfg.job.config_name

    def compose(overrides: Sequence[str]) -> DictConfig:
        return hydra.compose(config_name=config_name, overrides=list(overrides))

    summary = search(
        cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task), compose
    )
    best = summary["best"]
    return None if best is None else float(best["value"])


def main() -> None:
    register_resolvers()
    try:
        run_hydra(_hydra_main)
    except KeyboardInterrupt as exc:
        print(
            f"{exc or 'search interrupted'}: run the same command again to resume it (the "
            "interrupted trial runs again first)",
            file=sys.stderr,
        )
        sys.exit(getattr(exc, "exit_code", 130))


if __name__ == "__main__":
    main()
