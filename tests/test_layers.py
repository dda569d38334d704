"""The package's layers import only downwards: no cycle between its parts, and nothing that runs a
trained model (inference, evaluation, explanations, reports) imports the training loop."""

from __future__ import annotations

import ast
from pathlib import Path

import radsight

PACKAGE = Path(radsight.__file__).parent
# Parts that use trained models and so must work without the training machinery.
INFERENCE_SIDE = ("infer", "predict", "explain_files", "evaluate", "explain", "metrics", "report", "methods")


def part_of(module: str) -> str:
    """``radsight.data.image_io`` -> ``data``: the unit whose imports must not form a cycle."""
    return module.split(".")[1] if module.count(".") else ""


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    for child in ast.iter_child_nodes(tree):
        if is_type_checking_block(child):
            continue
        yield child
        yield from runtime_nodes(child)


def imports_of(path: Path) -> set[str]:
    """Every radsight module a file imports when it runs, at module level or inside functions."""
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("radsight.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("radsight"):
            found |= {node.module}
    return found


def graph() -> dict[str, set[str]]:
    """part -> the other parts it imports."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = part_of(module_name(path))
        targets = {part_of(name) for name in imports_of(path)} - {source, ""}
        edges.setdefault(source, set()).update(targets)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_for_annotations_only_are_not_counted(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    lines = ["from typing import TYPE_CHECKING", "import radsight.a", "if TYPE_CHECKING:"]
    lines.append("    import radsight.b")
    module.write_text("\n".join(lines) + "\n")
    assert imports_of(module) == {"radsight.a"}


def test_find_cycle_sees_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_parts_import_without_cycles() -> None:
    edges = graph()
    assert {"data", "methods", "train", "cli"} <= set(edges)  # the walk found the package
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_nothing_on_the_inference_side_imports_training() -> None:
    offenders = [
        f"{module_name(path)} imports radsight.train"
        for path in PACKAGE.rglob("*.py")
        if part_of(module_name(path)) in INFERENCE_SIDE and "radsight.train" in imports_of(path)
    ]
    assert not offenders, offenders


def test_no_module_is_named_after_a_standard_library_module() -> None:
    import sys

    shadowing = [
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if path.stem in sys.stdlib_module_names and path.stem != "__init__"
    ]
    assert not shadowing, shadowing
