"""The library's floors: a module imports only from its own floor or below (lower layers never import higher ones)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hybridreduce"
# floor of each top-level module or package, ground first
FLOORS = [
    {"errors", "lazy", "plugins", "device", "layout", "files", "setting", "__init__"},
    {"config", "video", "dataset"},
    {"redundancy"},
    {"models"},
    {"reduction"},
    {"scoring"},
    {"training"},
    {"probing", "inference", "store", "check_model"},
    {"lmms"},
    {"report"},
    {"jobs", "cli", "__main__"},
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def unit(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def imported_units(path: Path) -> set[str]:
    """The top-level hybridreduce modules or packages that ``path`` imports (lazily inside functions too)."""
    depth = len(path.relative_to(SRC).parts) - 1  # 0 for a top-level module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to the package root
                up = node.level - 1 - depth
                if up > 0:
                    continue
                base = [] if node.level - 1 == depth else list(path.relative_to(SRC).parts[: depth - node.level + 1])
                target = (base + (node.module.split(".") if node.module else []))
                names = [target[0]] if target else [a.name for a in node.names]
            elif node.module and node.module.startswith("hybridreduce."):
                names = [node.module.split(".")[1]]
            else:
                continue
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("hybridreduce."))
    return found


def test_every_module_has_a_floor():
    units = {unit(p) for p in SRC.rglob("*.py")}
    assert units <= set(FLOOR), units - set(FLOOR)


def test_no_module_imports_from_a_higher_floor():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        me = unit(path)
        for other in imported_units(path) - {me}:
            if other in FLOOR and FLOOR[other] > FLOOR[me]:
                upward.append(f"{path.relative_to(SRC)} ({me}, floor {FLOOR[me]}) imports {other} "
                              f"(floor {FLOOR[other]})")
    assert not upward, "\n".join(upward)
