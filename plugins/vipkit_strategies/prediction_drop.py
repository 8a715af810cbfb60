"""``prediction-drop``: a block's importance is how much removing it changes the model's guided prediction on the
probe prompts, at a few points of a short sampling trajectory: no video is rendered per candidate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

import vipkit
from vipkit import VipkitError, track
from vipkit.interfaces import Evaluate

if TYPE_CHECKING:
    from torch import Tensor


class PredictionDrop(vipkit.ImportanceScorer):
    """Importance = mean relative change ``|g' − g|² / |g|²`` of the guided prediction ``g`` when the block is removed.

    The inputs are the model's own: a ``steps``-step guided DDIM trajectory (family-agnostic, through ``add_noise``
    and ``training_target``) from seeded noise for the first ``videos`` probe prompts, run once with every block in
    place; each candidate then costs one guided denoiser call per point of ``measure_at`` (two batched calls with
    the defaults), where reward-drop renders and scores every probe video. The probe prompts and seeds are the
    ones ``evaluate`` renders: the scorer learns them by calling ``evaluate`` with a stand-in of the model that stops
    at its first ``generate`` call, so nothing is rendered or scored for that. One video is rendered, once per
    generation settings (so once per run), to learn the shape of the family's latents.

    Measured on the shapes teacher (benchmarks/RESULTS.md §11, 6 seeds): 15-18× cheaper than reward-drop on 8 probe
    videos (denoiser evaluations and seconds), with a rougher ranking: Spearman 0.53 with that reward-drop over 21
    blocks (0.33 over the 7 motion modules), 0.61 with reward-drop on 40 other videos, where reward-drop on the 8
    probe videos reaches 0.75. ``two-pass`` uses it to shortlist finalists for reward-drop. Deterministic: the noise
    of probe video ``i`` comes from its seed. Ties keep the candidates' order.
    """

    name = "prediction-drop"

    class Config(vipkit.Config):
        videos: int = Field(
            4, gt=0, description="Probe videos compared: the first ones of the probe prompts (all if fewer)."
        )
        steps: int = Field(
            4,
            ge=2,
            description="Steps of the guided DDIM trajectory on which predictions are compared, evenly spaced over the "
            "training timesteps from the noisiest (4 steps of 1000: t = 999, 749, 499, 249).",
        )
        measure_at: tuple[int, ...] = Field(
            (1, 2),
            min_length=1,
            description="The trajectory's points (0 = the pure-noise start, up to steps − 1) where the predictions "
            "with and without a block are compared; each costs one guided denoiser call per candidate.",
        )
        guidance_scale: float | None = Field(
            None,
            ge=0,
            description="Classifier-free guidance scale of the compared predictions; None: the model's own "
            "(`guidance_scale` of its generation settings; values <= 1 compare the conditional prediction alone).",
        )

        @model_validator(mode="after")
        def _points_on_the_trajectory(self) -> PredictionDrop.Config:
            outside = [index for index in self.measure_at if not 0 <= index < self.steps]
            if outside:
                raise ValueError(f"measure_at {outside} outside the trajectory's points 0..{self.steps - 1} (steps)")
            if len(set(self.measure_at)) != len(self.measure_at):
                raise ValueError("measure_at names a point twice")
            return self

    config: Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._latents: dict[str, Tensor] = {}

    def rank(
        self,
        model: vipkit.VideoModel,
        candidates: Sequence[vipkit.Block],
        evaluate: Evaluate,
        objective: vipkit.Objective,
    ) -> list[vipkit.BlockImportance]:
        import torch

        from vipkit_strategies.prediction_change import Guidance, Trajectory, probe_noise

        prompts, seeds = probe_inputs(model, candidates, evaluate)
        prompts, seeds = prompts[: self.config.videos], seeds[: self.config.videos]
        cfg = self.config
        with torch.no_grad():
            latent = self._latent(model, prompts[0], seeds[0])
            guidance = Guidance.of(model, prompts, cfg.guidance_scale)
            trajectory = Trajectory.sample(model, guidance, probe_noise(latent, seeds), cfg.steps, cfg.measure_at)
            ranking = []
            for block in track(candidates, "prediction drop per block", total=len(candidates)):
                model.remove_block(block.name)
                try:
                    change = trajectory.change(model, guidance)
                finally:
                    model.restore_block(block.name)
                ranking.append(vipkit.BlockImportance(block, change))
        return sorted(ranking, key=lambda item: item.importance)

    def _latent(self, model: vipkit.VideoModel, prompt: str, seed: int) -> Tensor:
        """One video's latents, for their shape: rendered once per generation settings (later stages reuse it)."""
        key = repr(sorted(model.generation_settings.items()))
        if key not in self._latents:
            self._latents[key] = model.generate([prompt], [seed]).latents[0]
        return self._latents[key]


class _Rendered(Exception):
    """Raised by ``_StopAtGenerate.generate``: carries the prompts and seeds ``evaluate`` asked for."""

    def __init__(self, prompts: Sequence[str], seeds: Sequence[int]) -> None:
        super().__init__("the probe prompts are known")
        self.prompts, self.seeds = list(prompts), list(seeds)


class _StopAtGenerate:
    """The model as ``evaluate`` sees it, except that ``generate`` stops the evaluation with its arguments."""

    def __init__(self, model: vipkit.VideoModel) -> None:
        self._model = model

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> vipkit.Generation:
        raise _Rendered(prompts, seeds)


def probe_inputs(
    model: vipkit.VideoModel, candidates: Sequence[vipkit.Block], evaluate: Evaluate
) -> tuple[list[str], list[int]]:
    """The prompts and seeds ``evaluate`` renders, learnt without rendering them.

    ``evaluate`` is called with a stand-in of ``model`` whose ``generate`` raises with its arguments. When the
    engine already holds the videos of the model's current state (no probe prompts, and the evaluation videos of
    this state made), it scores those without generating; a second call with the first candidate removed (a state
    it cannot hold yet) is then stopped the same way, and the block is restored. With several processes each one
    is asked for its share of the prompts; they are gathered back in order on every process (this needs at least
    one probe prompt per process).
    """
    from vipkit import distributed

    for removed in (None, *(block.name for block in candidates[:1])):
        if removed is not None:
            model.remove_block(removed)
        try:
            evaluate(_StopAtGenerate(model))  # type: ignore[arg-type]  # a stand-in: everything but generate is the model's
        except _Rendered as seen:
            pairs = distributed.gather(list(zip(seen.prompts, seen.seeds, strict=True)))
            return [prompt for prompt, _ in pairs], [seed for _, seed in pairs]
        finally:
            if removed is not None:
                model.restore_block(removed)
    raise VipkitError(
        "prediction-drop could not learn the probe prompts: the evaluation it was given scored videos without "
        "generating any, also with a block removed"
    )
