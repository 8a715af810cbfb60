"""KD: match the teacher's denoising output and its block features (works across removed blocks,
since removing a block keeps every block output's shape)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import vipkit


class KD(vipkit.DistillLoss):
    name = "kd"

    class Config(vipkit.Config):
        output_weight: float = Field(1.0, ge=0, description="weight of the MSE to the teacher's prediction")
        feature_weight: float = Field(1.0, ge=0, description="weight of the mean per-block feature MSE to the teacher")
        on: Literal["winner", "both"] = Field(
            "winner", description="distil on the winner (teacher) latents only, or on winners and losers"
        )

    config: Config

    def compute(
        self, student: vipkit.VideoModel, teacher: vipkit.VideoModel, batch: vipkit.PairBatch
    ) -> vipkit.LossOutput:
        import torch

        from vipkit_losses.functional import kd_loss
        from vipkit_losses.noising import noise_batch

        cfg = self.config
        noised = noise_batch(student, batch, with_losers=cfg.on == "both")
        inputs = (noised.noisy_latents, noised.timesteps, noised.conditioning)
        student_out, student_feats = student.predict_noise(*inputs, features=True)
        with torch.no_grad():
            teacher_out, teacher_feats = teacher.predict_noise(*inputs, features=True)
        loss, metrics = kd_loss(
            student_out, teacher_out, student_feats, teacher_feats, cfg.feature_weight, output_weight=cfg.output_weight
        )
        return vipkit.LossOutput(loss, metrics | {"loss": loss.detach()})
