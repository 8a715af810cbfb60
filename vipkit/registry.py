"""Name -> component class lookup, with clear errors for duplicates and unknown names."""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from vipkit.errors import VipkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Components of one kind (rewards, losses, ...) by registered name."""

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[T]] = {}
        self._sources: dict[str, str] = {}

    def register(self, cls: type[T], source: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(
                f"{source}: {cls!r} registered as one of the {self.kind} is not a {self.base.__name__} subclass"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{source}: {cls.__qualname__} has no `name` (a non-empty str class attribute)")
        if name in self._classes:
            raise ValueError(f"{source}: {self.kind} name {name!r} is already registered by {self._sources[name]}")
        self._classes[name] = cls
        self._sources[name] = source

    def unregister(self, name: str) -> None:
        del self._classes[name], self._sources[name]

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise VipkitError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._classes)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.base.__name__} {name!r}.{hint} Known: {', '.join(known) or '(none)'}"

    def source(self, name: str) -> str:
        return self._sources[name]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes
