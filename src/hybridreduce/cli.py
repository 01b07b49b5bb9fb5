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
    check = sub.add_parser("check-model", help="what each model of a study will be, without loading weights: layer "
                           "types, vision tokens, the schedule of every method and budget, FLOPs, memory")
    check.add_argument("--configfile", nargs="+", default=[], help="study config file(s), as given to snakemake "
                       "(merged over config/config.yaml)")
    check.add_argument("--models", nargs="+", help="only these models (default: inference.models)")
    check.add_argument("--repo", default=".", help="the repository (its config/config.yaml; default: here)")
    args = parser.parse_args(argv)
    if args.command == "check-model":
        from .check_model import run
        from .errors import ConfigError

        try:
            reports, status = run(args.configfile, args.repo, args.models)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for report in reports:
            print("\n".join(report.lines), end="\n\n")
        if status:
            print(f"failed: {', '.join(r.name for r in reports if not r.ok)}", file=sys.stderr)
        return status
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
