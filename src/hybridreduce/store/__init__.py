"""Results: each job writes its own result file (:mod:`.results`); one collect step loads them all into the
study's DuckDB file (:mod:`.database`) with the table definitions in :mod:`.schema`."""

from ..lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    ".database": ["collect"],
    ".results": ["JobResult", "atomic_write", "read_result"],
    ".schema": ["TABLES"],
})
