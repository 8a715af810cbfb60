"""Names and numbers the VideoCrafter2 family's options and blocks use, in a module without heavy imports (the
family class reads them when it registers)."""

KINDS = ("spatial_attention", "temporal_attention", "temporal_conv", "resblock", "middle", "encoder_decoder_pair")
"""Every kind of prunable unit (``vipkit_videocrafter2.blocks``)."""

ZERO_IDENTITY_KINDS = ("spatial_attention", "temporal_attention", "temporal_conv", "resblock", "middle")
"""The residual kinds: all-zero parameters make them the identity, so an export can write them as zeros. An
encoder/decoder pair is not residual (the decoder block also takes the encoder's skip)."""

OFFICIAL = "official"
EXPORT_FORMATS = {
    OFFICIAL: "the official checkpoint's UNet state dict (model.diffusion_model.* keys, safetensors) for the "
    "VideoCrafter code, over the released model.ckpt; not for models without an encoder/decoder pair",
}
"""``vipkit export --format`` choices."""

NUM_TRAIN_TIMESTEPS = 1000
"""The official DDPM schedule's length (``timesteps: 1000``)."""
