"""Names and numbers the VideoCrafter2 family's options and blocks use, in a module without heavy imports (the
family class reads them when it registers)."""

KINDS = ("spatial_attention", "temporal_attention", "temporal_conv", "resblock", "middle", "encoder_decoder_pair")
"""Every kind of prunable unit (``vipkit_videocrafter2.blocks``)."""

NUM_TRAIN_TIMESTEPS = 1000
"""The official DDPM schedule's length (``timesteps: 1000``)."""
