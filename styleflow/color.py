"""Colour preservation: keep the content's colours, take only the stylised luminance."""

from __future__ import annotations

import numpy as np
from PIL import Image


def preserve_colors(content_rgb: np.ndarray, stylized_rgb: np.ndarray) -> np.ndarray:
    """Y (luma) of the stylised image with Cb and Cr of the content image (JPEG's YCbCr).

    Both are uint8 RGB arrays of the same size; the result is one too.
    """
    y = np.asarray(Image.fromarray(stylized_rgb).convert("YCbCr"))[..., 0]
    ycbcr = np.asarray(Image.fromarray(content_rgb).convert("YCbCr")).copy()
    ycbcr[..., 0] = y
    return np.asarray(Image.fromarray(ycbcr, "YCbCr").convert("RGB"), dtype=np.uint8).copy()
