"""Networks as plain ``nn.Module``s, each registering itself on import, and the LightningModule."""

# Imported for their registrations: every module below calls register_model where it defines
# its networks, so importing the package makes all of them available by name.
from cxrnet.models import convnext, densenet, efficientnet, mobilenet, resnet, timm_nets
from cxrnet.models.adapt import count_trainable_parameters
from cxrnet.models.notebook_cnn import NotebookCNN
from cxrnet.models.registry import (
    ENTRY_POINT_GROUP,
    available_models,
    create_model,
    register_family,
    register_model,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "NotebookCNN",
    "available_models",
    "convnext",
    "count_trainable_parameters",
    "create_model",
    "densenet",
    "efficientnet",
    "mobilenet",
    "register_family",
    "register_model",
    "resnet",
    "timm_nets",
]
