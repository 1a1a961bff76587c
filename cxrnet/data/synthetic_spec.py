"""What a synthetic set is (``SyntheticSpec``) and what one of its films is (``Film``).

Apart from the generator (``synthetic``) and the drawing (``radiograph``), which both need them,
so that neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from cxrnet.data.records import CLASS_NAMES

# Bump when the drawing changes, so cached folders built by older code are not reused.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that changes the generated files; hashed into the cache folder name."""

    n_train: int = 600  # images per split
    n_val: int = 150
    n_test: int = 200
    pneumonia_fraction: float = 0.75
    bacteria_fraction: float = 0.65  # share of pneumonia films that are bacterial
    min_size: int = 180  # image side range in px; aspect ratio ~0.75-1.35
    max_size: int = 320
    seed: int = 0
    opacity_scale: float = 1.0  # multiplies pneumonia opacity density; lower is harder
    noise_scale: float = 1.0  # multiplies detector noise
    exposure_jitter: float = 1.0  # multiplies the film-to-film exposure (gain, gamma) spread
    distractor_rate: float = 0.4  # how often benign look-alike shadows appear; 0 disables
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 4:
                raise ValueError(
                    f"{name} must be an integer of at least 4 (so each class is present), "
                    f"got {value!r}"
                )
        for name in ("pneumonia_fraction", "bacteria_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.min_size < 32:
            raise ValueError(f"min_size must be at least 32 px, got {self.min_size}")
        if self.max_size < self.min_size:
            raise ValueError(
                f"max_size ({self.max_size}) must be >= min_size ({self.min_size}); "
                "raise max_size or lower min_size"
            )
        for name in ("opacity_scale", "noise_scale", "exposure_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.distractor_rate <= 1.0:
            raise ValueError(f"distractor_rate must be in [0, 1], got {self.distractor_rate}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def digest(self) -> str:
        """Short stable hash of the spec and the generator version (the cache key)."""
        payload = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Film:
    """One file to draw: where it goes, what it shows, and the seeds that fix its pixels."""

    split: str
    index: int  # position within the split; with the seed and split, fixes the image
    kind: str  # one of _KINDS
    patient: int  # patient number, unique per kind across all splits
    filename: str

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[0 if self.kind == "normal" else 1]
