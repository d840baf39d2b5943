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
    photorealism term, `temporal` the video's temporal-consistency term (None for problems
    without one)."""

    total: float
    content: float
    style: float
    tv: float
    photo: float | None = None
    temporal: float | None = None

    @classmethod
    def of(cls, values, photo: bool = False, temporal: bool = False) -> "Parts":
        """Parts from a LossGraph's values: [total, content, style, tv], then the photo and
        temporal terms when the graph has them."""
        values = [float(v) for v in values]
        head, rest = values[:4], values[4:]
        photo_value = rest.pop(0) if photo and rest else None
        temporal_value = rest.pop(0) if temporal and rest else None
        return cls(*head, photo_value, temporal_value)

    def as_dict(self) -> dict[str, float]:
        parts = {"total": self.total, "content": self.content, "style": self.style,
                 "tv": self.tv}
        if self.photo is not None:
            parts["photo"] = self.photo
        if self.temporal is not None:
            parts["temporal"] = self.temporal
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
    # Video: the previous output warped onto this frame (1, h, w, 3) in network space and the
    # per-pixel weights of the temporal term (1, h, w, 1) (objective.flow).
    temporal: tuple = ()

    def as_args(self) -> tuple:
        args = (self.content, self.content_weights, self.grams, self.style_weights,
                self.gram_offsets, self.term_weights)
        if self.guides or self.matting or self.temporal:
            args += (self.guides, self.region_weights, self.matting)
        if self.temporal:
            args += (self.temporal,)
        return args
