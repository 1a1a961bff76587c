"""MobileNetV3 small and large (torchvision), trained from scratch on one-channel films."""

from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

from cxrnet.models.adapt import torchvision_factory
from cxrnet.models.registry import register_model

for _builder in (mobilenet_v3_small, mobilenet_v3_large):
    register_model(_builder.__name__, torchvision_factory(_builder))
