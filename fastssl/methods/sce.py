"""SCE — "Similarity Contrastive Estimation for Self-Supervised Soft Contrastive Learning"
(Denize et al., 2023), as Mini-SSL runs it on CIFAR: symmetric loss, split-BN, shuffled
teacher batch, weak teacher view.

MoCo's one-hot target and ReSSL's relational one, mixed. The student's softmax over
[its positive, the memory] (τ) is pulled towards λ on the positive plus 1 − λ spread over
the memory by the teacher's similarities (τ_m, the positive's own similarity masked;
Eq. 5–7): the memory holds past instances that may well share the image's semantics, and
they are pulled or pushed according to how similar the teacher finds them, rather than all
pushed away as noise. λ = 1 is MoCo; λ = 0 ReSSL with the positive among the candidates.
Everything else — the EMA teacher on the weak view, the memory of its weak-view embeddings
pushed after the optimiser step, shuffled BN — is ReSSL's, so only the objective changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from fastssl.losses.relational import sce_loss
from fastssl.methods.ressl import ReSSL, ReSSLConfig
from fastssl.recipes import register
from fastssl.recipes.defaults import MINI_SSL_STRONG_WEAK, mini_ssl_tiny_imagenet


@dataclass(frozen=True)
class SCEConfig(ReSSLConfig):
    temperature: float = 0.1  # student τ (hard-coded in Mini-SSL's SCE.py; SCE's own configs)
    teacher_temperature: float = 0.05  # τ_m (Mini-SSL script --tem 0.05; SCE's CIFAR-10 config)
    # Projector 512→2048→256, no BN (Mini-SSL SCE.py's dim default; SCE's own CIFAR-10
    # config: 512→512 (BN, ReLU)→128)
    proj_dim: int = 256  # projection (embedding) dimension
    symmetric: bool = True  # both directions, averaged (Mini-SSL --symmetric; SCE's config: off)
    coefficient: float = 0.5  # λ, the one-hot's share of the target (Mini-SSL SCE.py; SCE's own configs)
    # The positive's teacher similarity in the relation: 0 (SCE's and Mini-SSL's code) or masked (Eq. 5)
    positive_relation: Literal["zero", "masked"] = "zero"  # the positive's teacher similarity: 0 or masked


class SCE(ReSSL):
    cfg: SCEConfig

    def objective(self, query: Tensor, key: Tensor, memory: Tensor) -> Tensor:
        """One direction: ``query`` against [``key``, memory], soft target from ``key``."""
        c = self.cfg
        return sce_loss(query, key, memory, c.temperature, c.teacher_temperature, c.coefficient, c.positive_relation)


# Mini-SSL's recipe (main_pretrain_evaluation.sh with --weak --symmetric; SCE.py, after its
# fix of 21 Nov 2023: both directions see the memory as it was before the step). Sources
# disagree: SCE's own CIFAR-10 config (CEA-LIST/SCE) has the same optimiser, schedule, τ,
# τ_m, λ, memory and EMA, but one direction (sym False), a 512→512 (BN, ReLU)→128 projector
# and a weak flip of p 0.5. SCE's and Mini-SSL's code give the positive's teacher slot a
# similarity of 0 where Eq. 5 masks it; fastssl follows the code
# (``--method.positive-relation masked`` for the equation; negligible at τ_m 0.05).
register(
    "sce", SCE, SCEConfig, summary="SCE · Mini-SSL",
    views=MINI_SSL_STRONG_WEAK, presets=mini_ssl_tiny_imagenet(SCEConfig),
)
