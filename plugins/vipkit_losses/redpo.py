"""ReDPO (V.I.P.): Diffusion-DPO on teacher-wins/student-loses pairs plus an SFT anchor to the teacher.

DPO alone pushes the student away from its own failures but can drift anywhere; the SFT term holds
it to the teacher's denoising on the winning (teacher) videos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

import vipkit
from vipkit import VipkitError

if TYPE_CHECKING:
    import torch


class ReDPO(vipkit.DistillLoss):
    name = "redpo"

    class Config(vipkit.Config):
        beta: float = Field(
            5000.0,
            gt=0,
            description="Diffusion-DPO KL strength, read in `beta_convention` (5000 salesforce = 2500 diffusers)",
        )
        beta_convention: Literal["salesforce", "diffusers"] = Field(
            "salesforce",
            description="whose beta scale: salesforce multiplies beta by 0.5 (SalesforceAIResearch/DiffusionDPO), "
            "diffusers by 1 (diffusers research example)",
        )
        dpo_weight: float = Field(1.0, ge=0, description="weight of the Diffusion-DPO term")
        sft_weight: float = Field(
            1e4,
            ge=0,
            description="weight of the SFT anchor; the V.I.P. paper reports 1e4 for AnimateDiff and 1e6 for "
            "VideoCrafter2 (unverified: no released code to check against)",
        )
        reference: Literal["teacher", "student_init"] = Field(
            "teacher",
            description="DPO reference: the frozen teacher, or a frozen copy of the student made when the stage begins",
        )
        sft_target: Literal["teacher", "noise"] = Field(
            "teacher",
            description="what the SFT anchor regresses the winner prediction to: the teacher's prediction, "
            "or the true training target (noise or velocity)",
        )
        uncond_weight: float = Field(
            0.0,
            ge=0,
            description="weight of the unconditional anchor: the student's empty-prompt prediction on the winners "
            "regressed to the teacher's, so classifier-free guidance does not amplify the distillation's drift "
            "(costs one more student and teacher forward on the winners)",
        )

    config: Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self.student_init: vipkit.VideoModel | None = None  # the frozen reference when reference="student_init"
        self.uncond: torch.Tensor | None = None  # the empty-prompt conditioning when uncond_weight > 0

    def begin_stage(self, student: vipkit.VideoModel, teacher: vipkit.VideoModel) -> None:
        """Freeze a copy of the student as this stage's DPO reference when asked to; encode the empty prompt."""
        if self.config.reference == "student_init":
            self.student_init = frozen_copy(student)
        if self.config.uncond_weight > 0:
            from vipkit_losses.guidance import unconditional_embedding

            self.uncond = unconditional_embedding(teacher)

    def compute(
        self, student: vipkit.VideoModel, teacher: vipkit.VideoModel, batch: vipkit.PairBatch
    ) -> vipkit.LossOutput:
        import torch

        from vipkit_losses.functional import (
            diffusion_dpo_loss,
            per_sample_mse,
            sft_loss,
        )
        from vipkit_losses.guidance import unconditional_anchor
        from vipkit_losses.noising import noise_batch

        cfg = self.config
        reference = self._reference(teacher)
        noised = noise_batch(student, batch, with_losers=True)
        inputs = (noised.noisy_latents, noised.timesteps, noised.conditioning)
        pairs = noised.pairs

        prediction = student.predict_noise(*inputs)
        with torch.no_grad():
            reference_prediction = reference.predict_noise(*inputs)
        model_w, model_l = per_sample_mse(prediction, noised.target).split(pairs)
        ref_w, ref_l = per_sample_mse(reference_prediction, noised.target).split(pairs)
        dpo, metrics = diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, cfg.beta, cfg.beta_convention)

        if cfg.sft_target == "noise":
            sft_target = noised.target[:pairs]
        elif reference is teacher:  # the reference forward already holds the teacher's winner prediction
            sft_target = reference_prediction[:pairs]
        else:
            with torch.no_grad():
                sft_target = teacher.predict_noise(*(x[:pairs] for x in inputs))
        sft = sft_loss(prediction[:pairs], sft_target)

        loss = cfg.dpo_weight * dpo + cfg.sft_weight * sft
        metrics |= {"dpo": dpo.detach(), "sft": sft.detach()}
        if cfg.uncond_weight > 0:
            if self.uncond is None:
                raise VipkitError("redpo with uncond_weight > 0 needs begin_stage() before compute()")
            winners = (x[:pairs] for x in inputs[:2])
            uncond = unconditional_anchor(student, teacher, *winners, self.uncond)
            loss = loss + cfg.uncond_weight * uncond
            metrics["uncond"] = uncond.detach()
        metrics["loss"] = loss.detach()
        return vipkit.LossOutput(loss, metrics)

    def _reference(self, teacher: vipkit.VideoModel) -> vipkit.VideoModel:
        if self.config.reference == "teacher":
            return teacher
        if self.student_init is None:
            raise VipkitError("redpo with reference='student_init' needs begin_stage() before compute()")
        return self.student_init


def frozen_copy(model: vipkit.VideoModel) -> vipkit.VideoModel:
    """An inference-mode copy whose parameters take no gradient."""
    copy = model.copy()
    for parameter in copy.trainable_parameters("all"):
        parameter.requires_grad_(False)
    copy.train_mode(False)
    return copy
