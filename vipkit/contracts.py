"""What a contract check reports: every way a component breaks its interface, one line each."""

from __future__ import annotations

from vipkit.interfaces import Component, Config, RewardModel


class ContractError(AssertionError):
    """Every way a component class breaks its interface's contract, one line each (raised by the ``check_*``)."""

    def __init__(self, cls: type, violations: list[str], interface: type[Component] = RewardModel) -> None:
        self.violations = violations
        label = f"{cls.__module__}.{cls.__qualname__}"
        count = f"{len(violations)} way{'s' if len(violations) != 1 else ''}"
        super().__init__(
            f"{label} breaks the {interface.__name__} contract in {count}:\n"
            + "\n".join(f"  - {v}" for v in violations)
            + f"\n(the contract: docs/plugins.md, section 'The {interface.__name__} contract')"
        )


def component_violations(cls: type[Component]) -> list[str]:
    """What every component owes recipes: a name to be found by, and options that validate themselves."""
    found = []
    if not (isinstance(getattr(cls, "name", None), str) and cls.name):
        found.append("`name` must be a non-empty str class attribute (recipes name the component by it)")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, Config)):
        found.append("`Config` must subclass vipkit.Config (validated, frozen, unknown keys rejected)")
        return found
    try:
        cls.Config.model_validate({"__no_such_option__": 1})
        found.append(
            "`Config` accepts unknown keys, so recipe typos pass silently; subclass vipkit.Config and keep extra='forbid'"
        )
    except ValueError:
        pass
    undescribed = [name for name, field in cls.Config.model_fields.items() if not field.description]
    if undescribed:
        found.append(f"`Config` options without a description (Field(..., description=...)): {', '.join(undescribed)}")
    return found
