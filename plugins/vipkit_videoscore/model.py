"""VideoScore's network, written on transformers' own Idefics2 classes.

TIGER-Lab released VideoScore (v1, v1.1) as Mantis' ``Idefics2ForSequenceClassification``: the Idefics2
model (SigLIP vision tower, perceiver connector, Mistral decoder) under the attribute ``model``, and a
regression head ``score = nn.Linear(text hidden size, 5)`` (with bias) applied to the hidden state of the
last real token. That class no longer builds on transformers 5.x, so this module rebuilds it from
``transformers.Idefics2Model`` with the same attribute names: the official safetensors load unchanged
(``model.vision_model.*``, ``model.connector.*``, ``model.text_model.*``, ``score.weight``, ``score.bias``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Idefics2Config, Idefics2Model
from transformers.models.idefics2.modeling_idefics2 import Idefics2PreTrainedModel

from vipkit_videoscore.reward import DIMENSIONS


class VideoScoreModel(Idefics2PreTrainedModel):
    """Idefics2 + a linear head on the last real token: one raw score (about 1..4) per dimension."""

    def __init__(self, config: Idefics2Config) -> None:
        super().__init__(config)
        self.model = Idefics2Model(config)
        self.score = nn.Linear(config.text_config.hidden_size, len(DIMENSIONS))
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw scores ``(batch, 5)``; sequences are right-padded, so the last real token is ``mask.sum() - 1``.

        The official class finds the same token as the one before the first pad id, which is the last token
        for an unpadded row; pooling first and then applying the (position-wise) head gives the same numbers.
        """
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            pixel_attention_mask=pixel_attention_mask,
            use_cache=False,
        ).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.score(pooled)


def idefics2_8b_config(**overrides: Any) -> Idefics2Config:
    """The VideoScore/Idefics2-8B architecture: SigLIP-so400m (27 layers, 1152 wide), a 64-latent perceiver,
    Mistral-7B (32 layers, 4096 wide, 32003 tokens with Idefics2's three added ones)."""
    options: dict[str, Any] = dict(
        vision_config=dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=980,
            patch_size=14,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
        perceiver_config=dict(
            hidden_size=4096,
            rms_norm_eps=1e-5,
            hidden_act="silu",
            resampler_n_latents=64,
            resampler_depth=3,
            resampler_n_heads=16,
            resampler_head_dim=96,
            num_key_value_heads=4,
        ),
        text_config=dict(
            model_type="mistral",
            vocab_size=32003,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=32768,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            sliding_window=4096,
            pad_token_id=0,
        ),
        image_token_id=32001,
        use_cache=False,
    )
    options.update(overrides)
    return Idefics2Config(**options)
