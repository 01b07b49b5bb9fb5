"""Command line: ``python -m hybridreduce <command>`` (the workflow itself runs through Snakemake)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybridreduce", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tables", help="print the DuckDB table reference as Markdown")
    methods = sub.add_parser("methods", help="list registered methods")
    methods.add_argument("--stage", choices=["redundancy", "reduction"], default="redundancy",
                         help="redundancy: pre-LLM methods; reduction: in-LLM methods")
    args = parser.parse_args(argv)
    if args.command == "tables":
        from .store.schema import markdown_reference

        print(markdown_reference())
    elif args.command == "methods" and args.stage == "redundancy":
        from .redundancy import registry

        for name, fn in sorted(registry().items()):
            print(f"{name}\t{(fn.__doc__ or '').strip().splitlines()[0]}")
    elif args.command == "methods":
        from .reduction.methods import registry

        for name, method in registry().items():
            print(f"{name}\t{method.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
