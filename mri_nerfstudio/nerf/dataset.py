"""Views held in memory (float, not re-quantised) instead of read from image files."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, UInt8
from nerfstudio.data.datasets.base_dataset import InputDataset


class MRIViewDataset(InputDataset):
    """Serves the dataparser's ``metadata["images"]`` ([N, H, W] float in [0, 1]) as RGB images."""

    def get_image_float32(self, image_idx: int) -> Float[torch.Tensor, "H W 3"]:
        return self.metadata["images"][image_idx, :, :, None].expand(-1, -1, 3).clone()

    def get_numpy_image(self, image_idx: int) -> UInt8[np.ndarray, "H W 3"]:
        return (self.get_image_float32(image_idx) * 255).round().to(torch.uint8).numpy()
