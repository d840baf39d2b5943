"""Colour profiles: inputs with an embedded ICC profile (e.g. Adobe RGB) are converted to sRGB,
the space VGG19 was trained in and the one every output is written in, and outputs carry an
sRGB profile so colour-managed viewers and printers read them as intended (Pillow's ImageCms,
i.e. LittleCMS)."""

from __future__ import annotations

import functools
import io

from PIL import Image


@functools.lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """An sRGB ICC profile (LittleCMS's built-in), as bytes to embed in outputs."""
    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    # LittleCMS stamps the creation time into the header (bytes 24-35) and derives the
    # profile ID (84-99) from it: zeroed (an ID of zeros means "not computed"), the same
    # command gives the same bytes, as --seed promises.
    data[24:36] = bytes(12)
    data[84:100] = bytes(16)
    return bytes(data)


def to_srgb(img: Image.Image) -> Image.Image:
    """`img` with its embedded ICC profile applied, as RGB in sRGB (perceptual intent);
    unchanged when it has no profile or the profile does not describe RGB or grey data.
    Raises ValueError for a damaged profile."""
    data = img.info.get("icc_profile")
    if not data or img.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return img
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(data))
    except (OSError, ImageCms.PyCMSError) as exc:
        raise ValueError(f"unreadable ICC profile ({exc})") from None
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
    base = img.convert({"RGBA": "RGB", "LA": "L"}.get(img.mode, img.mode))
    target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    try:
        out = ImageCms.profileToProfile(base, source, target, outputMode="RGB",
                                        renderingIntent=ImageCms.Intent.PERCEPTUAL)
    except ImageCms.PyCMSError as exc:
        raise ValueError(f"cannot apply the ICC profile ({exc})") from None
    if alpha is not None:
        out.putalpha(alpha)
    return out
