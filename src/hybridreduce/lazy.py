"""Package exports that load on first use (PEP 562).

Importing one light submodule (``hybridreduce.models.stack`` in a benchmark, say) then does not pull in PyAV,
DuckDB or lmms-eval through the package's ``__init__``, and submodules can import each other without cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[Callable[[str], object], list[str]]:
    """``(__getattr__, __all__)`` for ``package`` from ``{submodule: [names]}`` (submodule relative, ``.x``)."""
    where = {name: module for module, names in exports.items() for name in names}
    # Importing a submodule binds its name on the package, so an export of the same name would be replaced by it.
    clash = set(where) & {module.lstrip(".") for module in exports}
    if clash:
        raise ValueError(f"{package}: exports named like a submodule: {sorted(clash)}")

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(where[name], package), name)

    return __getattr__, sorted(where)
