"""What every part of the objective shares: the two loss normalisations, named for the projects
they come from, the targets a candidate is compared with, and one evaluation's loss parts."""

from __future__ import annotations

from dataclasses import dataclass

KERAS_EXAMPLE = "keras-example"  # neural_style_transfer.py: the Keras example's sums
NEURAL_STYLE = "neural-style"  # neural_style.py: anishathalye/neural-style's means
NORMALISATIONS = (KERAS_EXAMPLE, NEURAL_STYLE)


@dataclass
class Parts:
    """One evaluation's loss and its weighted parts, as Python floats."""

    total: float
    content: float
    style: float
    tv: float

    def as_dict(self) -> dict[str, float]:
        return {"total": self.total, "content": self.content, "style": self.style, "tv": self.tv}


@dataclass(frozen=True)
class Targets:
    """What one problem compares a candidate with, as tensors (arguments of a LossGraph)."""

    content: tuple  # content features, one per content layer
    content_weights: object  # (n_content,) tensor
    grams: tuple  # blended Gram targets, one per style layer
    style_weights: object  # (n_style,) tensor
    gram_offsets: object  # (n_style,) tensor: the blend's constant (see Objective)
    term_weights: object  # (3,) tensor: content, style, tv

    def as_args(self) -> tuple:
        return (self.content, self.content_weights, self.grams, self.style_weights,
                self.gram_offsets, self.term_weights)
