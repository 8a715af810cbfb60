"""VideoCrafter2's text encoder: the OpenCLIP ViT-H-14 text tower, run as a transformers ``CLIPTextModel``.

The official ``FrozenOpenCLIPEmbedder(layer="penultimate")`` runs every residual block but the
last, then the final LayerNorm. A ``CLIPTextModel`` with one layer fewer computes exactly that as
its ``last_hidden_state`` (causal mask, exact GELU), so the converter drops the last block. The
tokenizer pads with token 0 (``!``), as ``open_clip.tokenize`` does.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel

from vipkit import VipkitError

OPEN_CLIP_PREFIX = "cond_stage_model.model."
VIT_H_14_TEXT = dict(width=1024, heads=16, layers=24, context_length=77, vocab_size=49408)
"""The OpenCLIP ViT-H-14 text tower (laion2b_s32b_b79k) that VideoCrafter2 conditions on."""
OPEN_CLIP_HEAD_WIDTH = 64  # OpenCLIP text towers use 64-wide heads (ViT-H-14: 1024 / 16)

_RENAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def text_config(width: int, heads: int, layers: int, context_length: int, vocab_size: int) -> CLIPTextConfig:
    """The ``CLIPTextModel`` config for an OpenCLIP text tower of this size, read out at its penultimate block."""
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers - 1,
        num_attention_heads=heads,
        max_position_embeddings=context_length,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=width,
        bos_token_id=vocab_size - 2,  # <|startoftext|>
        eos_token_id=vocab_size - 1,  # <|endoftext|>
        pad_token_id=0,
    )


def open_clip_shape(state: Mapping[str, Tensor], prefix: str = OPEN_CLIP_PREFIX) -> dict[str, int]:
    """Width, depth, context length and vocabulary of the OpenCLIP text tower stored under ``prefix``."""
    try:
        vocab_size, width = state[prefix + "token_embedding.weight"].shape
        context_length = state[prefix + "positional_embedding"].shape[0]
    except KeyError as missing:
        raise VipkitError(f"no OpenCLIP text tower in the checkpoint: {missing} is missing") from None
    blocks = {key[len(prefix) :].split(".")[2] for key in state if key.startswith(prefix + "transformer.resblocks.")}
    return dict(width=width, layers=len(blocks), context_length=context_length, vocab_size=vocab_size)


def convert_open_clip(state: Mapping[str, Tensor], layers: int, prefix: str = OPEN_CLIP_PREFIX) -> dict[str, Tensor]:
    """OpenCLIP text-tower keys under ``prefix`` -> ``CLIPTextModel`` keys, without the last block.

    ``in_proj_weight``/``in_proj_bias`` split into q, k, v; the visual tower, ``text_projection``,
    ``logit_scale`` and the last block are not needed for the penultimate-layer output.
    """
    out = {
        "embeddings.token_embedding.weight": state[prefix + "token_embedding.weight"],
        "embeddings.position_embedding.weight": state[prefix + "positional_embedding"],
        "final_layer_norm.weight": state[prefix + "ln_final.weight"],
        "final_layer_norm.bias": state[prefix + "ln_final.bias"],
    }
    for index in range(layers - 1):
        source, target = f"{prefix}transformer.resblocks.{index}.", f"encoder.layers.{index}."
        for kind in ("weight", "bias"):
            q, k, v = state[f"{source}attn.in_proj_{kind}"].chunk(3, dim=0)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v), strict=True):
                out[f"{target}self_attn.{name}.{kind}"] = part.contiguous()
            for old, new in _RENAMES.items():
                out[f"{target}{new}.{kind}"] = state[f"{source}{old}.{kind}"]
    return out


def text_encoder_from_open_clip(
    state: Mapping[str, Tensor], head_width: int = OPEN_CLIP_HEAD_WIDTH, prefix: str = OPEN_CLIP_PREFIX
) -> CLIPTextModel:
    """A frozen ``CLIPTextModel`` holding the OpenCLIP text tower found under ``prefix`` in ``state``."""
    shape = open_clip_shape(state, prefix)
    model = CLIPTextModel(text_config(heads=shape["width"] // head_width, **shape))
    weights = convert_open_clip(state, shape["layers"], prefix)
    model.load_state_dict({key: value.float() for key, value in weights.items()}, strict=True)
    return model.eval().requires_grad_(False)
