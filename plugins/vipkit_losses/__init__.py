"""In-tree losses: ReDPO (Diffusion-DPO + SFT anchor), SFT and KD, registered like any third-party plugin.

Each loss imports torch and ``functional``/``guidance``/``noising`` inside its methods, so registering
them (``vipkit plugins``, ``vipkit validate``) imports no torch.
"""

from __future__ import annotations

import vipkit
from vipkit_losses.kd import KD
from vipkit_losses.redpo import ReDPO
from vipkit_losses.sft import SFT


@vipkit.hookimpl
def register_losses(register: vipkit.hookspecs.Register) -> None:
    register(ReDPO)
    register(SFT)
    register(KD)
