"""``[[pruners]]``: several pruners in one schedule, each acting in the stages it names, in table order within a stage.

A recipe prunes with one ``[pruner]`` table every stage, or with ``[[pruners]]`` tables that each name the stages
they act in (``stages = [1, 2]``; all stages when left out): blocks first and narrower layers after
(``block`` in stages 1-2, ``width`` in stage 3), or both in the same stage (the tables' order is the order they
act in). Each pruner sees the schedule as the stages it acts in: its ``begin_stage`` gets its own stage count and
its own stage number, so a ``target_fraction`` or ``fraction`` stated "over the schedule" is spread over the
stages that pruner acts in.

A stage's record names what each pruner removed, each line prefixed by the pruner's name in brackets
(``[block] down_blocks.0.motion_modules.0``), so a resumed stage hands every pruner back its own decisions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from vipkit.errors import VipkitError
from vipkit.interfaces import BlockImportance, Plan, Pruner, VideoModel
from vipkit.plugins import Plugins
from vipkit.validation import ComponentSpec

_PREFIX = re.compile(r"\[([^\]]+)\] (.*)", re.DOTALL)


class PrunerStackSpec(BaseModel):
    """The ``[[pruners]]`` tables after validation: each part's spec with the stages it acts in, in file order."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    parts: list[tuple[tuple[int, ...], ComponentSpec]]
    key: str = "pruners"  # where the file holds it, for messages

    @property
    def name(self) -> str:
        return " + ".join(spec.name for _, spec in self.parts)

    def build(self, plugins: Plugins) -> PrunerStack:
        return PrunerStack([(stages, spec.build(plugins)) for stages, spec in self.parts])

    def dump(self) -> dict[str, Any]:
        return {"stack": [{"stages": list(stages), **spec.dump()} for stages, spec in self.parts]}


class PrunerStack(Pruner):
    """The ``[[pruners]]`` of a recipe as one pruner: each stage runs the parts that act in it, in order."""

    name = "pruners"

    def __init__(self, parts: Sequence[tuple[tuple[int, ...], Pruner]]) -> None:
        super().__init__()
        self.parts = list(parts)
        self._stage = 0

    def _acting(self, stage: int) -> list[tuple[int, Pruner]]:
        """The parts acting in ``stage``, each with its own number for it (its 1st, 2nd... stage)."""
        return [(stages.index(stage) + 1, part) for stages, part in self.parts if stage in stages]

    def _own_plan(self, plan: Plan, part: Pruner) -> Plan:
        """``plan`` as ``part`` sees it: the schedule is the stages it acts in."""
        stages = next(stages for stages, candidate in self.parts if candidate is part)
        return dataclasses.replace(plan, stages=len(stages))

    @property
    def uses_ranking(self) -> bool:  # type: ignore[override]  # depends on the stage begun
        return any(part.uses_ranking for _, part in self._acting(self._stage))

    def begin_stage(self, plan: Plan, stage: int) -> None:
        self._stage = stage
        for own_stage, part in self._acting(stage):
            part.begin_stage(self._own_plan(plan, part), own_stage)

    def apply(self, model: VideoModel, ranking: Sequence[BlockImportance]) -> list[str]:
        return [f"[{part.name}] {item}" for _, part in self._acting(self._stage) for item in part.apply(model, ranking)]

    def replay(self, model: VideoModel, removed: Sequence[str]) -> None:
        mine: dict[str, list[str]] = {}
        for item in removed:
            match = _PREFIX.fullmatch(item)
            if match is None:
                raise VipkitError(f"a stored decision of [[pruners]] names no pruner: {item!r}")
            mine.setdefault(match[1], []).append(match[2])
        for _, part in self._acting(self._stage):
            part.replay(model, mine.get(part.name, []))

    def check_plan(self, plan: Plan) -> list[str]:
        """Each part's problems, keyed ``[i].option`` (the engine prefixes ``pruners``)."""
        return [
            f"[{index}].{problem}"
            for index, (_, part) in enumerate(self.parts)
            for problem in part.check_plan(self._own_plan(plan, part))
        ]

    def describe_stage(self, plan: Plan, stage: int) -> str:
        return "; then ".join(
            part.describe_stage(self._own_plan(plan, part), own_stage) for own_stage, part in self._acting(stage)
        )
