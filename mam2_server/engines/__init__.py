"""Engines by name. Imports are lazy so that the weights-free engines never import torch."""
from __future__ import annotations

import importlib

from mam2_server.engines.base import Engine, EngineConfig, EngineError, FrameResult

DEFAULT_ENGINE = "classic"

# name -> "module:factory"; a factory takes an EngineConfig and returns an Engine.
_FACTORIES = {
    "baseline": "mam2_server.engines.baseline:build",
    "classic": "mam2_server.engines.classic:build",
    "mam2": "mam2_server.engines.mam2:build",
    "hybrid": "mam2_server.engines.hybrid:build",
}


def available_engines() -> list[str]:
    """Names of the engines whose module is present in this installation."""
    names = []
    for name, target in _FACTORIES.items():
        if importlib.util.find_spec(target.split(":")[0]) is not None:
            names.append(name)
    return names


def _factory(name: str) -> tuple[str, str]:
    """(module, factory function) of a built-in engine present in this installation."""
    target = _FACTORIES.get(name)
    if target is None or name not in available_engines():
        raise EngineError(f"unknown engine {name!r}; available: {', '.join(available_engines())}")
    module_name, factory = target.split(":")
    return module_name, factory


def engine_class(name: str) -> type[Engine]:
    """The Engine class of a built-in engine, for its capability flags (`passes_continue`, `needs_gpu`)
    without building it (no weights loaded, no torch imported by the weights-free engines)."""
    module = importlib.import_module(_factory(name)[0])
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Engine) and getattr(value, "name", None) == name:
            return value
    raise EngineError(f"engine {name!r}: no Engine class named so in {module.__name__}")


def create_engine(config: EngineConfig | str) -> Engine:
    if isinstance(config, str):
        config = EngineConfig(name=config)
    module_name, factory = _factory(config.name)
    return getattr(importlib.import_module(module_name), factory)(config)


__all__ = ["DEFAULT_ENGINE", "Engine", "EngineConfig", "EngineError", "FrameResult",
           "available_engines", "create_engine", "engine_class"]
