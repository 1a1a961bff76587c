"""Any timm network as ``model.net.name=timm/<name>`` (the optional ``timm`` extra).

Always ``pretrained=False``: nothing downloads at run time. Pretrained weights come from a local
file through ``model.net.weights`` like every other network's.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cxrnet.models.registry import NetworkFactory, register_family


def _resolve(name: str) -> NetworkFactory:
    try:
        import timm
    except ImportError:
        raise ValueError(
            f"model.net.name=timm/{name} needs timm: pip install 'cxrnet[timm]'"
        ) from None
    if not timm.is_model(name):
        raise ValueError(f"timm has no network {name!r}; see timm.list_models()")

    def factory(num_outputs: int = 1, in_channels: int = 1, **kwargs: Any) -> nn.Module:
        return timm.create_model(
            name, pretrained=False, num_classes=num_outputs, in_chans=in_channels, **kwargs
        )

    return factory


register_family("timm", _resolve)
