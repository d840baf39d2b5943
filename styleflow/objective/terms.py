"""What every part of the objective shares: the two loss normalisations, named for the projects
they come from, the targets a candidate is compared with, and one evaluation's loss parts."""

from __future__ import annotations

from dataclasses import dataclass

KERAS_EXAMPLE = "keras-example"  # neural_style_transfer.py: the Keras example's sums
NEURAL_STYLE = "neural-style"  # neural_style.py: anishathalye/neural-style's means
NORMALISATIONS = (KERAS_EXAMPLE, NEURAL_STYLE)


@dataclass
class Parts:
    """One evaluation's loss and its weighted parts, as Python floats; `photo` is the
    photorealism term (None for problems without one)."""

    total: float
    content: float
    style: float
    tv: float
    photo: float | None = None

    def as_dict(self) -> dict[str, float]:
        parts = {"total": self.total, "content": self.content, "style": self.style,
                 "tv": self.tv}
        if self.photo is not None:
            parts["photo"] = self.photo
        return parts


@dataclass(frozen=True)
class Targets:
    """What one problem compares a candidate with, as tensors (arguments of a LossGraph)."""

    content: tuple  # content features, one per content layer
    content_weights: object  # (n_content,) tensor
    grams: tuple  # blended Gram targets, one per style layer
    style_weights: object  # (n_style,) tensor
    gram_offsets: object  # (n_style,) tensor: the blend's constant (see Objective)
    term_weights: object  # (3,) tensor: content, style, tv (and photorealism, 4th, if any)
    # Guided problems (masks): per style layer the output's region guides (1, h, w, R) at
    # that layer's size, and the regions' weights (R,); `grams` then hold (R, c, c) targets.
    guides: tuple = ()
    region_weights: object = None
    # Photorealism: the content's matting-Laplacian constants (matting.MattingLaplacian).
    matting: tuple = ()

    def as_args(self) -> tuple:
        args = (self.content, self.content_weights, self.grams, self.style_weights,
                self.gram_offsets, self.term_weights)
        if self.guides or self.matting:
            args += (self.guides, self.region_weights, self.matting)
        return args
