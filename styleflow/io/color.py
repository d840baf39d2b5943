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


def preserve_colors_float(content_rgb: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """As preserve_colors, for a float stylised image on the 0..255 scale (16-bit outputs):
    the same JPEG (BT.601 full-range) YCbCr, computed in floating point."""
    stylized = np.asarray(stylized, np.float64)
    content = np.asarray(content_rgb, np.float64)
    y = stylized @ np.array([0.299, 0.587, 0.114])
    cb = content @ np.array([-0.168736, -0.331264, 0.5])
    cr = content @ np.array([0.5, -0.418688, -0.081312])
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(rgb, 0, 255).astype(np.float32)
