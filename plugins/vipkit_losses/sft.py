"""SFT: regress the student's denoising on the winning (teacher) videos; the baseline ReDPO must beat."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import vipkit


class SFT(vipkit.DistillLoss):
    name = "sft"

    class Config(vipkit.Config):
        target: Literal["teacher", "noise"] = Field(
            "teacher",
            description="regress to the teacher's prediction, or to the true training target (noise or velocity)",
        )

    config: Config

    def compute(
        self, student: vipkit.VideoModel, teacher: vipkit.VideoModel, batch: vipkit.PairBatch
    ) -> vipkit.LossOutput:
        import torch

        from vipkit_losses.functional import sft_loss
        from vipkit_losses.noising import noise_batch

        noised = noise_batch(student, batch, with_losers=False)
        inputs = (noised.noisy_latents, noised.timesteps, noised.conditioning)
        prediction = student.predict_noise(*inputs)
        if self.config.target == "noise":
            target = noised.target
        else:
            with torch.no_grad():
                target = teacher.predict_noise(*inputs)
        loss = sft_loss(prediction, target)
        return vipkit.LossOutput(loss, {"loss": loss.detach(), "sft": loss.detach()})
