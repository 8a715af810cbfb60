"""Loads the in-tree and entry-point plugins and fills one registry per component kind.

In-tree plugins always load. Entry-point plugins (group ``vipkit``) load unless ``VIPKIT_PLUGINS``
is set: then only the comma-separated entry-point or distribution names in it load (empty: none).
A plugin that fails to import or to register is recorded with its error and skipped, so one broken
package never breaks the CLI.
"""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points

import pluggy

from vipkit import hookspecs
from vipkit.interfaces import COMPONENT_KINDS, Component
from vipkit.registry import Registry

DEFAULT_PLUGINS: tuple[str, ...] = (
    "vipkit_animatediff",
    "vipkit_clip",
    "vipkit_cogvideox",
    "vipkit_losses",
    "vipkit_ltx",
    "vipkit_shapes",
    "vipkit_strategies",
    "vipkit_vbench",
    "vipkit_videocrafter2",
    "vipkit_videoscore",
    "vipkit_wan",
    "vipkit_width",
)
ENTRY_POINT_GROUP = "vipkit"
ALLOWLIST_ENV = "VIPKIT_PLUGINS"


@dataclass
class PluginInfo:
    """One plugin as ``vipkit plugins`` shows it."""

    name: str
    source: str  # "in-tree" or "entry point"
    version: str
    components: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    error: str | None = None


@dataclass
class Plugins:
    """Everything the plugins registered, by kind, and what happened to each plugin."""

    manager: pluggy.PluginManager
    registries: dict[str, Registry[Component]]
    infos: list[PluginInfo]

    def registry(self, kind: str) -> Registry[Component]:
        return self.registries[kind]

    def provider(self, kind: str, name: str) -> str:
        """Which plugin, at which version, registered component ``name`` of ``kind``: "vipkit_shapes 0.1.0"."""
        source = self.registries[kind].source(name)
        info = next((info for info in self.infos if info.name == source), None)
        return f"{source} {info.version}" if info is not None and info.version else source

    def add(self, plugin: object, name: str, source: str = "in-tree", version: str = "") -> PluginInfo:
        """Register one more plugin object (e.g. a plugin defined inside a test); errors propagate."""
        info = PluginInfo(name, source, version)
        _register_plugin(self.manager, info, plugin, self.registries)
        self.infos.append(info)
        return info

    def remove(self, name: str) -> None:
        """Unregister a plugin added with ``add`` and drop its components."""
        info = next(info for info in self.infos if info.name == name)
        for kind, names in info.components.items():
            for component in names:
                self.registries[kind].unregister(component)
        self.manager.unregister(name=name)
        self.infos.remove(info)


def _short_error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _allowed_entry_points() -> list[tuple[str, str, str, object]]:
    """(name, distribution, version, entry point) for each entry point the allowlist admits."""
    allow = os.environ.get(ALLOWLIST_ENV)
    wanted = None if allow is None else {item.strip() for item in allow.split(",") if item.strip()}
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if wanted is None or ep.name in wanted or dist in wanted:
            found.append((ep.name, dist, version, ep))
    return found


def _vipkit_version() -> str:
    from vipkit import __version__

    return __version__


def _register_plugin(
    pm: pluggy.PluginManager, info: PluginInfo, module: object, registries: dict[str, Registry[Component]]
) -> None:
    """Call each of the module's hooks with a ``register`` bound to this plugin, so errors stay its own."""
    pm.register(module, name=info.name)
    for kind, registry in registries.items():
        for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
            if impl.plugin is not module:
                continue

            def register(cls: type, _registry: Registry[Component] = registry, _kind: str = kind) -> None:
                _registry.register(cls, source=info.name)
                info.components.setdefault(_kind, []).append(cls.name)

            impl.function(register=register)


@cache
def load_plugins() -> Plugins:
    """The in-tree and allowed entry-point plugins, imported once per process."""
    return discover_plugins(DEFAULT_PLUGINS, include_entry_points=True)


def discover_plugins(module_names: tuple[str, ...], include_entry_points: bool) -> Plugins:
    """Import the named plugin modules (and entry points) and build fresh registries."""
    pm = pluggy.PluginManager("vipkit")
    pm.add_hookspecs(hookspecs)
    registries = {kind: Registry(kind, base) for kind, base in COMPONENT_KINDS.items()}
    infos: list[PluginInfo] = []
    sources: list[tuple[PluginInfo, object]] = [
        (PluginInfo(name, "in-tree", _vipkit_version()), name) for name in module_names
    ]
    if include_entry_points:
        sources += [
            (PluginInfo(f"{dist}:{name}" if dist != name else name, "entry point", version), ep)
            for name, dist, version, ep in _allowed_entry_points()
        ]
    for info, target in sources:
        infos.append(info)
        try:
            module = importlib.import_module(target) if isinstance(target, str) else target.load()  # type: ignore[attr-defined]
            _register_plugin(pm, info, module, registries)
        except Exception as exc:  # a broken plugin is reported, never fatal
            info.error = _short_error(exc)
        except SystemExit as exc:  # nor one that exits while loading: vipkit plugins / validate must still answer
            info.error = f"called sys.exit({exc.code!r}) while loading; a plugin must raise an exception instead"
    return Plugins(pm, registries, infos)
