"""ResNet-18/34/50 (torchvision), trained from scratch on one-channel films."""

from torchvision.models import resnet18, resnet34, resnet50

from cxrnet.models.adapt import torchvision_factory
from cxrnet.models.registry import register_model

for _builder in (resnet18, resnet34, resnet50):
    register_model(_builder.__name__, torchvision_factory(_builder))
