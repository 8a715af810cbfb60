"""Strategy components: importance scorers, the block pruner, and the pair curator of V.I.P."""

import vipkit
from vipkit_strategies.block_pruner import BlockPruner
from vipkit_strategies.degraded_dimensions import DegradedDimensions
from vipkit_strategies.param_count import ParamCount
from vipkit_strategies.prediction_drop import PredictionDrop
from vipkit_strategies.reward_drop import RewardDrop
from vipkit_strategies.two_pass import TwoPass

__all__ = ["BlockPruner", "DegradedDimensions", "ParamCount", "PredictionDrop", "RewardDrop", "TwoPass"]


@vipkit.hookimpl
def register_scorers(register):
    register(RewardDrop)
    register(ParamCount)
    register(PredictionDrop)
    register(TwoPass)


@vipkit.hookimpl
def register_pruners(register):
    register(BlockPruner)


@vipkit.hookimpl
def register_curators(register):
    register(DegradedDimensions)
