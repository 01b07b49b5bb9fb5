"""Results: each job writes its own result file (:mod:`.results`); one collect step loads them all into the
study's DuckDB file (:mod:`.collect`) with the table definitions in :mod:`.schema`."""

from .collect import collect
from .results import JobResult, atomic_write, read_result
from .schema import TABLES

__all__ = ["TABLES", "JobResult", "atomic_write", "collect", "read_result"]
