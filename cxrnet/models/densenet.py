"""DenseNet-121 (torchvision), the CheXNet backbone, trained from scratch on one-channel films."""

from torchvision.models import densenet121

from cxrnet.models.adapt import torchvision_factory
from cxrnet.models.registry import register_model

register_model("densenet121", torchvision_factory(densenet121))
