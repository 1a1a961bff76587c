"""ConvNeXt-Tiny (torchvision), trained from scratch on one-channel films."""

from torchvision.models import convnext_tiny

from cxrnet.models.adapt import torchvision_factory
from cxrnet.models.registry import register_model

register_model("convnext_tiny", torchvision_factory(convnext_tiny))
