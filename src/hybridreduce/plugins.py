"""Third-party methods as plugins: installed packages register pre-LLM and in-LLM methods through entry points.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."hybridreduce.pre_llm"]
    my_method = "my_package:keep_mask_fn"       # (grid, q, seed) -> keep mask, or (keep mask, merged embeddings)

    [project.entry-points."hybridreduce.in_llm"]
    my_ablation = "my_package:METHOD"           # a reduction.methods.InLLMMethod

The registries load them at their first lookup (not at import: a plugin imports hybridreduce itself); the config
validation accepts their names without importing them (so Snakemake's start stays cheap); ``python -m hybridreduce
methods`` lists them with their docs.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from .errors import ConfigError

PRE_LLM, IN_LLM = "hybridreduce.pre_llm", "hybridreduce.in_llm"
_loaded: set[str] = set()


def plugin_names(group: str) -> list[str]:
    """Names registered in entry-point ``group`` by installed packages (nothing is imported)."""
    return sorted(ep.name for ep in entry_points(group=group))


def load_plugins(group: str, registry: dict, expected: type | None = None) -> None:
    """Add every entry point of ``group`` to ``registry``, once per process; a name the registry already has, or an
    object of the wrong kind, is an error naming the package."""
    if group in _loaded:
        return
    _loaded.add(group)
    for ep in entry_points(group=group):
        where = f"entry point {ep.name!r} of group {group!r} ({ep.value}, package {ep.dist.name if ep.dist else '?'})"
        if ep.name in registry:
            raise ConfigError(f"{where}: the name is already registered; choose another")
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must name itself, not fail deep inside an import
            raise ConfigError(f"{where}: cannot be loaded: {type(e).__name__}: {e}") from None
        if expected is not None and not isinstance(obj, expected):
            raise ConfigError(f"{where}: expected a {expected.__name__}, got {type(obj).__name__}")
        if expected is None and not callable(obj):
            raise ConfigError(f"{where}: expected a function (grid, q, seed) -> keep mask")
        registry[ep.name] = obj
