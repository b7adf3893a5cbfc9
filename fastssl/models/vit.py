"""Vision Transformers from timm (the [vit] extra), as DINO and MoCo v3 use them.

``patch_size`` 4 for 32 px images gives 8×8 tokens, as the CIFAR ViT baselines do;
``dynamic_img_size`` lets one network take global and local crops of other sizes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from torch import Tensor, nn

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

TIMM_NAMES = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224"}


class ViT(nn.Module):
    """A timm ViT returning the class token's features (and, on request, the patch tokens
    as a feature map)."""

    net: VisionTransformer
    feature_dim: int  # width of the class token's features

    def __init__(self, arch: str, image_size: int, patch_size: int) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as error:
            raise ImportError(f"--model.arch {arch} needs the [vit] extra: pip install -e '.[vit]'") from error
        self.net = cast("VisionTransformer", timm.create_model(
            TIMM_NAMES[arch], img_size=image_size, patch_size=patch_size, num_classes=0, dynamic_img_size=True
        ))
        self.feature_dim = self.net.num_features

    def forward_with_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(class token N×D, patch tokens as a feature map N×D×h×w) from one pass."""
        tokens = self.net.forward_features(x)
        side_h, side_w = (s // p for s, p in zip(x.shape[-2:], self.net.patch_embed.patch_size, strict=True))
        patches = tokens[:, self.net.num_prefix_tokens :].transpose(1, 2).reshape(x.shape[0], -1, side_h, side_w)
        return self.net.forward_head(tokens, pre_logits=True), patches

    def forward_map(self, x: Tensor) -> Tensor:
        """Patch tokens as N×D×h×w."""
        return self.forward_with_map(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        """The class token after the final norm, N×D."""
        return self.net(x)
