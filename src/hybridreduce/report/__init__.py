"""The study report: one offline HTML page rendered with Jinja2 from the study's DuckDB file alone."""

from .render import render

__all__ = ["render"]
