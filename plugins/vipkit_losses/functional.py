"""The loss math as small pure functions of tensors, so each piece is testable on hand-made numbers.

Diffusion-DPO exists in two public codes that differ by a factor 2 in beta; the convention is an
explicit argument so a recipe's beta means what its author read:

- ``"salesforce"`` (SalesforceAIResearch/DiffusionDPO ``train.py``, default beta 5000):
  ``inside = -0.5 * beta * ((mw - ml) - (rw - rl))``
- ``"diffusers"`` (diffusers ``examples/research_projects/diffusion_dpo``, default beta 2500):
  ``inside = beta * ((rw - rl) - (mw - ml))``

so salesforce beta 5000 is exactly diffusers beta 2500.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BETA_SCALE: dict[str, float] = {"salesforce": 0.5, "diffusers": 1.0}
"""Diffusion-DPO convention -> the factor its beta is multiplied by."""


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per sample, shape ``(B,)``, in float32 (half-precision MSEs lose the DPO signal)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    return (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))


def diffusion_dpo_loss(
    model_w: Tensor, model_l: Tensor, ref_w: Tensor, ref_l: Tensor, beta: float, convention: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """Diffusion-DPO on per-sample denoising MSEs ``(B,)`` of winners and losers.

    The loss falls when the model lowers its winner error relative to its loser error by more than
    the reference does. Equal model and reference errors give exactly ``log 2``.
    """
    if convention not in BETA_SCALE:
        raise ValueError(f"unknown Diffusion-DPO convention {convention!r}; valid: {', '.join(BETA_SCALE)}")
    model_diff = model_w - model_l
    ref_diff = ref_w - ref_l
    inside = BETA_SCALE[convention] * beta * (ref_diff - model_diff)
    loss = -F.logsigmoid(inside).mean()
    with torch.no_grad():
        implicit_acc = (inside > 0).float().mean() + 0.5 * (inside == 0).float().mean()
    metrics = {  # 0-dim tensors: read once per optimizer step, not here (vipkit.LossOutput)
        "implicit_acc": implicit_acc,
        "inside": inside.detach().mean(),
        "model_diff": model_diff.detach().mean(),
        "ref_diff": ref_diff.detach().mean(),
    }
    return loss, metrics


def sft_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error to the target (the teacher's prediction, or the true training target)."""
    return per_sample_mse(pred, target).mean()


def feature_mse(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
    """Mean over layers of each layer's feature MSE; the lists pair up layer by layer."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(
            f"student has {len(student_feats)} feature maps but teacher has {len(teacher_feats)}; they must pair up"
        )
    if not student_feats:
        raise ValueError("no feature maps to distil")
    return torch.stack([sft_loss(s, t) for s, t in zip(student_feats, teacher_feats, strict=True)]).mean()


def kd_loss(
    student_out: Tensor,
    teacher_out: Tensor,
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    feature_weight: float,
    output_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Knowledge distillation: ``output_weight * output MSE + feature_weight * feature_mse``."""
    output = sft_loss(student_out, teacher_out)
    features = feature_mse(student_feats, teacher_feats)
    loss = output_weight * output + feature_weight * features
    return loss, {"output_mse": output.detach(), "feature_mse": features.detach()}
