"""The seed notebook's network, rebuilt exactly as a plain ``nn.Module``.

Named after the notebook, not "seed", because "seed" also means the random seed.

Keras order is kept on purpose: convolution, ReLU, *then* BatchNorm, then a 2x2 max-pool that
rounds up (``padding='same'`` pooling: 150 -> 75 -> 38 -> 19 -> 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from cxrnet.models.registry import register_model


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D``: depthwise 3x3 without bias, then pointwise 1x1 with bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            padding="same",
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def _block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(
        conv,
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(channels),
        nn.MaxPool2d(2, ceil_mode=True),
    )


class NotebookCNN(nn.Module):
    """Four conv blocks (conv, separable, conv, separable), dense head, one logit per class.

    ``widths`` gives the four block widths; ``num_outputs`` is 1 for the binary task (a single
    logit for BCE) and the number of classes otherwise.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 150,
        widths: Sequence[int] = (32, 32, 64, 64),
        hidden: int = 128,
        dropout: float = 0.3,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"NotebookCNN takes exactly 4 block widths, got {list(widths)}")
        w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            _block(nn.Conv2d(in_channels, w1, 3, padding="same"), w1),
            _block(SeparableConv2d(w1, w2), w2),
            _block(nn.Conv2d(w2, w3, 3, padding="same"), w3),
            _block(SeparableConv2d(w3, w4), w4),
        )
        side = image_size
        for _ in range(4):
            side = math.ceil(side / 2)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(w4 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


register_model("notebook_cnn", NotebookCNN)
