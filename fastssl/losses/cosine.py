"""Regression losses between a prediction and a target embedding, as the non-contrastive
siamese methods use them (BYOL, SimSiam). Both compare directions only, so the inputs are
L2-normalised here, in fp32: normalising a bf16 vector of thousands of entries loses the
precision a cosine close to 1 needs.
"""

from __future__ import annotations

from torch import Tensor

from fastssl.losses.infonce import unit


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam (Chen & He, 2021): the negative cosine D of Eq. 1 with the stop-gradient of
    Eq. 3,

        D(p, stopgrad(z)) = −(p / ‖p‖₂) · (z / ‖z‖₂),

    ``prediction``, ``target``: N×D, row i of ``target`` is the target of row i of
    ``prediction``. No gradient reaches ``target``. Mean over the N rows.
    """
    p, z = unit(prediction), unit(target.detach())
    return -(p * z).sum(1).mean()


def normalized_l2(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL (Grill et al., 2020), Eq. 2: the squared distance of the unit vectors,

        ‖p̄ − z̄′‖₂² = 2 − 2·⟨p, z′⟩ / (‖p‖₂·‖z′‖₂) = 2 + 2·D(p, stopgrad(z′)),

    with SimSiam's D: the gradient is taken w.r.t. the online prediction only, as BYOL
    minimises the loss "with respect to θ only, but not ξ" (§3.1). Mean over the N rows.
    """
    return 2 + 2 * negative_cosine(prediction, target)
