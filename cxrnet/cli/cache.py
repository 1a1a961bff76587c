"""``cxrnet-cache data.root=<folder> [shard=i/n]``: build the image cache ahead of training,
alone or shared out over the tasks of a job array (``cxrnet.data.cache_shards``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cxrnet.cli.exit_codes import brief_errors
from cxrnet.cli.hydra_support import CONFIG_PATH, HYDRA_VERSION, check_types
from cxrnet.config import register_resolvers


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="cache")
@brief_errors
def _hydra_main(cfg: DictConfig) -> None:
    check_types(cfg)  # before the data: a value of the wrong kind is one line
    from cxrnet.data.cache import prepare_cache
    from cxrnet.data.cache_shards import Shard

    shard = None if cfg.get("shard") is None else Shard.parse(cfg.shard)  # before torch loads
    from hydra.utils import instantiate

    from cxrnet.training.run import resolve_data_root

    datamodule = instantiate(cfg.data, root=resolve_data_root(cfg))
    print(prepare_cache(datamodule, shard))


def main() -> None:
    register_resolvers()
    _hydra_main()


if __name__ == "__main__":
    main()
