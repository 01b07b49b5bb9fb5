"""The study report: one offline HTML page rendered with Jinja2 from the study's DuckDB file alone.

``render`` is imported lazily, so ``workflow/rules/report.smk`` can read the figure list
(``hybridreduce.report.claims.ALL_FIGURES``) at parse time without importing DuckDB or Jinja2.
"""

__all__ = ["render", "render_index"]


def __getattr__(name: str):
    if name in __all__:
        from . import page

        return getattr(page, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
