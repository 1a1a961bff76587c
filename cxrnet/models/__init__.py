from cxrnet.models.registry import available_models, create_model, register_model
from cxrnet.models.seed_cnn import SeedCNN, count_trainable_parameters

__all__ = [
    "SeedCNN",
    "available_models",
    "count_trainable_parameters",
    "create_model",
    "register_model",
]
