"""cxrnet: Lightning + Hydra experiments for pneumonia detection on chest X-rays."""

import os

# Offline by default: albumentations otherwise asks PyPI for a newer release at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
