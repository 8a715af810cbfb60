"""VideoCrafter2's diffusion schedule and its DDIM sampler, as the official code computes them.

Values from ``configs/inference_t2v_512_v2.0.yaml`` (``model.params``) and the defaults of
``lvdm/models/ddpm3d.py``: 1000 steps, betas linear in sqrt-space from 0.00085 to 0.012,
epsilon parameterisation, latents scaled by 0.18215, and ``use_scale`` with ``scale_b`` 0.7: the
clean latent is multiplied by a factor going linearly from 1 to 0.7 over the first 400 steps,
0.7 after (``scale_arr``), both when noising for training and inside each DDIM step. The
sampler follows ``lvdm/models/samplers/ddim.py``: uniform steps ``0, c, 2c, ... (+1)``, eta 1.0
by default (``scripts/run_text2video.sh``), classifier-free guidance on the empty prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vipkit import track
from vipkit.transfer import to_device
from vipkit_videocrafter2.names import NUM_TRAIN_TIMESTEPS

LINEAR_START, LINEAR_END = 0.00085, 0.012
LATENT_SCALE = 0.18215  # scale_factor: VAE latents are multiplied by it before diffusion
SCALE_A, SCALE_B, SCALE_MID_STEP = 1.0, 0.7, 400  # use_scale: scale_a (default), scale_b (config), mid_step (default)

Denoise = Callable[[Tensor, Tensor], Tensor]
"""(latents, timesteps) -> predicted noise, guidance already applied."""


@dataclass(frozen=True)
class Schedule:
    """The float32 buffers the official model registers (computed in float64 first, like the official code)."""

    alphas_cumprod: Tensor  # (1000,)
    scale: Tensor  # (1000,) scale_arr, the factor on the clean latent at each step

    @classmethod
    def official(cls) -> Schedule:
        betas = torch.linspace(LINEAR_START**0.5, LINEAR_END**0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
        ramp = torch.linspace(SCALE_A, SCALE_B, SCALE_MID_STEP, dtype=torch.float64)
        flat = torch.full((NUM_TRAIN_TIMESTEPS - SCALE_MID_STEP,), SCALE_B, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0).float(), torch.cat([ramp, flat]).float())

    def add_noise(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """q(x_t | x_0) = sqrt(a_t) * scale_t * x_0 + sqrt(1 - a_t) * noise."""
        shape = (-1,) + (1,) * (latents.dim() - 1)
        alpha = to_device(self.alphas_cumprod, latents.device)[timesteps].view(shape)  # no wait for the GPU mid-step
        scale = to_device(self.scale, latents.device)[timesteps].view(shape)
        return (alpha.sqrt() * scale * latents + (1 - alpha).sqrt() * noise).to(latents.dtype)


def ddim_timesteps(num_steps: int) -> Tensor:
    """The official uniform DDIM steps, ascending: 1, 1 + c, 1 + 2c, ... with c = 1000 // num_steps."""
    return torch.arange(0, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS // num_steps) + 1


def ddim_sample(
    denoise: Denoise,
    noise: Tensor,
    schedule: Schedule,
    num_steps: int,
    eta: float,
    step_noise: Callable[[], Tensor],
) -> Tensor:
    """Run the official DDIM loop from ``noise`` (x_T); ``step_noise`` draws the fresh noise of each step (eta > 0)."""
    steps = ddim_timesteps(num_steps)
    alphas = schedule.alphas_cumprod.double()[steps]
    alphas_prev = torch.cat([schedule.alphas_cumprod.double()[:1], alphas[:-1]])
    sigmas = eta * ((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev)).sqrt()
    scales = schedule.scale[steps]
    scales_prev = torch.cat([schedule.scale[:1], scales[:-1]])
    x = noise
    for index in track(reversed(range(len(steps))), "DDIM sampling", total=len(steps)):
        t = torch.full((x.shape[0],), int(steps[index]), dtype=torch.long, device=x.device)
        eps = denoise(x, t)
        a_t, a_prev, sigma = (float(v[index]) for v in (alphas, alphas_prev, sigmas))
        pred_x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5 / float(scales[index])
        direction = (1 - a_prev - sigma**2) ** 0.5 * eps
        x = a_prev**0.5 * float(scales_prev[index]) * pred_x0 + direction
        if sigma > 0:
            x = x + sigma * step_noise().to(x)
    return x


def guided(predict: Callable[[Tensor, Tensor, Tensor], Tensor], cond: Tensor, uncond: Tensor, scale: float) -> Denoise:
    """Classifier-free guidance in one batched call: uncond + scale * (cond - uncond); off when scale <= 1."""
    if scale <= 1.0:
        return lambda x, t: predict(x, t, cond)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        both = predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]))
        with_text, without = both.chunk(2)
        return without + scale * (with_text - without)

    return denoise


def per_video_noise(generators: Sequence[torch.Generator], shape: Sequence[int]) -> Tensor:
    """One draw per video from its own generator, so video i depends only on its seed."""
    return torch.stack([torch.randn(tuple(shape), generator=generator) for generator in generators])
