"""The unconditional anchor: keep the student's empty-prompt prediction on the teacher's.

Sampling uses classifier-free guidance, ``uncond + s * (cond - uncond)``. Training only the conditional
prediction moves ``cond - uncond``, and guidance multiplies that error by ``s`` (5 to 7.5 in practice):
distilling the conditional branch alone can make sampled videos worse while the loss falls. This term
trains the unconditional branch toward the teacher's on the same noisy winners.
"""

from __future__ import annotations

import torch
from torch import Tensor

import vipkit
from vipkit_losses.functional import sft_loss


def unconditional_embedding(model: vipkit.VideoModel) -> Tensor:
    """The conditioning of the prompt guidance contrasts with (the negative prompt, usually empty), ``(1, L, D)``."""
    return model.encode_prompts([str(model.generation_settings.get("negative_prompt", ""))])


def unconditional_anchor(
    student: vipkit.VideoModel, teacher: vipkit.VideoModel, noisy: Tensor, timesteps: Tensor, uncond: Tensor
) -> Tensor:
    """MSE between the student's and the teacher's unconditional predictions on ``noisy`` latents."""
    conditioning = uncond.expand(noisy.shape[0], *uncond.shape[1:])
    prediction = student.predict_noise(noisy, timesteps, conditioning)
    with torch.no_grad():
        target = teacher.predict_noise(noisy, timesteps, conditioning)
    return sft_loss(prediction, target)
