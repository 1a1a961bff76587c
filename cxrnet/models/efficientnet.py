"""EfficientNet-B0 (torchvision), trained from scratch on one-channel films."""

from torchvision.models import efficientnet_b0

from cxrnet.models.adapt import torchvision_factory
from cxrnet.models.registry import register_model

register_model("efficientnet_b0", torchvision_factory(efficientnet_b0))
