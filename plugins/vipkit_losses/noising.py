"""Forward diffusion of a training batch, drawn from the batch's generator so training is reproducible."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import vipkit


@dataclass(frozen=True)
class NoisedBatch:
    """Denoiser inputs and the target its prediction is scored against; winners come first."""

    noisy_latents: Tensor
    timesteps: Tensor
    conditioning: Tensor
    target: Tensor
    pairs: int  # winners in the batch; rows ``pairs:`` are the losers when present


def noise_batch(model: vipkit.VideoModel, batch: vipkit.PairBatch, *, with_losers: bool) -> NoisedBatch:
    """Noise the winners (and the losers with the SAME noise and timestep per pair, as Diffusion-DPO does).

    Sharing the draw makes the winner/loser error difference measure the videos, not the noise.
    """
    winners = batch.winner_latents
    pairs = winners.shape[0]
    noise, timesteps = draw_noise(batch, model.num_train_timesteps)
    latents, conditioning = winners, batch.conditioning
    if with_losers:
        latents = torch.cat([winners, batch.loser_latents])
        noise, timesteps = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
        conditioning = torch.cat([conditioning, conditioning])
    return NoisedBatch(
        noisy_latents=model.add_noise(latents, noise, timesteps),
        timesteps=timesteps,
        conditioning=conditioning,
        target=model.training_target(latents, noise, timesteps),
        pairs=pairs,
    )


def draw_noise(batch: vipkit.PairBatch, num_train_timesteps: int) -> tuple[Tensor, Tensor]:
    """Noise shaped like the winners and one timestep per pair, on the winners' device.

    With ``batch.pair_generators`` pair ``i`` draws its noise, then its timestep, from its own
    generator, so a pair gets the same draw in any micro-batch on any process.
    """
    winners = batch.winner_latents
    if batch.pair_generators is None:
        generator = batch.generator
        noise = torch.randn(winners.shape, generator=generator, device=generator.device, dtype=winners.dtype)
        timesteps = torch.randint(
            0, num_train_timesteps, (winners.shape[0],), generator=generator, device=generator.device
        )
    else:
        if len(batch.pair_generators) != winners.shape[0]:
            raise ValueError(f"{len(batch.pair_generators)} pair generators for {winners.shape[0]} pairs")
        draws = [
            (
                torch.randn(winners.shape[1:], generator=g, device=g.device, dtype=winners.dtype),
                torch.randint(0, num_train_timesteps, (1,), generator=g, device=g.device),
            )
            for g in batch.pair_generators
        ]
        noise = torch.stack([n for n, _ in draws])
        timesteps = torch.cat([t for _, t in draws])
    return vipkit.to_device(noise, winners.device), vipkit.to_device(timesteps, winners.device)
