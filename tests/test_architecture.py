"""The package's layout rules (ARCHITECTURE.md), read from the source with ``ast``: dependencies point one way."""

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "espnet_slam_aac"
MAX_LINES = 450

# area -> the areas it may import (besides itself). An area is a sub-package or a top-level module.
ALLOWED: Dict[str, Set[str]] = {
    "errors": set(),
    "utils": {"errors"},
    "data": {"errors", "utils"},
    "model": {"errors", "utils", "data"},
    "tasks": {"errors", "utils", "data", "model"},
    "clap": {"errors", "utils", "data"},
    "scoring": {"errors", "utils", "data"},
    "inference": {"errors", "utils", "data", "model", "tasks", "clap", "scoring"},
    "packaging": {"errors", "utils", "data", "model", "__init__"},
    "demo": {"errors", "utils", "data", "model", "inference"},
    "testing": {"errors", "utils", "data", "model", "tasks", "clap", "inference", "scoring"},
    "bin": {"errors", "utils", "data", "model", "tasks", "clap", "inference", "scoring", "packaging", "testing"}
    | {"demo"},
    "cli": set(),
    "__init__": {"utils"},
}
LAZY_IMPORTS_ALLOWED = ("bin", "testing", "cli")  # a fast --help may import our heavy modules late


def modules() -> Iterator[Tuple[Path, str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        area = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        yield path, area, ast.parse(path.read_text(encoding="utf-8"), str(path))


def our_imports(tree: ast.AST) -> Iterator[Tuple[ast.stmt, str]]:
    """(statement, dotted module under espnet_slam_aac) of every import of ours in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "espnet_slam_aac" or name.startswith("espnet_slam_aac."):
                yield node, name


def area_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_area_imports_only_the_areas_below_it():
    wrong: List[str] = []
    for path, area, tree in modules():
        for node, module in our_imports(tree):
            target = area_of(module)
            if target != area and target not in ALLOWED[area] and not module.startswith(f"espnet_slam_aac.{area}"):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {area} imports {module}")
    assert not wrong, "imports against the dependency rule (ARCHITECTURE.md):\n" + "\n".join(sorted(set(wrong)))


def test_the_areas_import_each_other_without_a_cycle():
    graph: Dict[str, Set[str]] = {area: set() for area in ALLOWED}
    for _, area, tree in modules():
        for node, module in our_imports(tree):
            if area_of(module) != area:
                graph.setdefault(area, set()).add(area_of(module))
    done: Set[str] = set()

    def visit(area: str, path: List[str]) -> None:
        if area in path:
            raise AssertionError("import cycle between areas: " + " -> ".join(path[path.index(area) :] + [area]))
        if area not in done:
            for target in sorted(graph.get(area, ())):
                visit(target, path + [area])
            done.add(area)

    for area in sorted(graph):
        visit(area, [])


def test_no_bin_module_imports_another():
    wrong = [
        f"{path.name}:{node.lineno}: {module}"
        for path, area, tree in modules()
        if area == "bin"
        for node, module in our_imports(tree)
        if module.startswith("espnet_slam_aac.bin.")
    ]
    wrong += [
        f"{path.name}:{node.lineno}: espnet_slam_aac.bin.{alias.name}"
        for path, area, tree in modules()
        if area == "bin"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "espnet_slam_aac.bin"
        for alias in node.names
    ]
    assert not wrong, "bin/ modules are entry points over the library, not libraries:\n" + "\n".join(wrong)


def test_our_modules_are_imported_at_the_top_not_inside_functions():
    wrong = []
    for path, area, tree in modules():
        if area in LAZY_IMPORTS_ALLOWED:
            continue
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node, module in our_imports(function):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {module} in {function.name}()")
    assert not wrong, "imports inside functions hide the dependency graph (or a cycle):\n" + "\n".join(sorted(wrong))


def test_no_module_is_too_long_to_hold_in_your_head():
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path, _, _ in modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by responsibility): {long}"


def listed_modules(text: str) -> Set[str]:
    """``folder/module.py`` of every module line of ARCHITECTURE.md's tree (two spaces per level)."""
    tree = text.split("```")[1]
    listed, folder = set(), ""
    for line in tree.splitlines():
        name = line.strip().split(" ")[0]
        if line.startswith("  ") and not line.startswith("    ") and name:
            folder = name if name.endswith("/") else ""
            if name.endswith(".py"):
                listed.add(name)
        elif line.startswith("    ") and name.endswith(".py"):
            listed.add(folder + name)
    return listed


def test_architecture_md_lists_every_module():
    listed = listed_modules((PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    present = {
        path.relative_to(PACKAGE).as_posix()
        for path, _, _ in modules()
        if path.name != "__init__.py" or path.parent == PACKAGE
    }
    assert listed == present, f"ARCHITECTURE.md lacks {sorted(present - listed)}, names gone {sorted(listed - present)}"


def test_every_tool_runs_through_the_runner():
    """One error format, one log format, --quiet: every bin/ main goes through utils/runner.run."""
    wrong = []
    for path, area, tree in modules():
        if area != "bin" or path.name == "__init__.py":
            continue
        main = next((f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main"), None)
        calls = [n for n in ast.walk(main) if isinstance(n, ast.Call)] if main else []
        if not any(ast.unparse(c.func) == "runner.run" for c in calls):
            wrong.append(path.name)
    assert not wrong, f"bin/ modules whose main does not call runner.run: {wrong}"
