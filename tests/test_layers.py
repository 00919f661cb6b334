"""The import structure, held by a test: no import circles in runtime/, tools/ or bench/ (imports inside
functions included), and each stage of runtime/ imports only the stages below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "tools", "bench")

# What each stage of runtime/ may import (besides itself); see runtime/__init__.py.
ALLOWED = {
    "errors": set(),
    "kernels": {"errors"},
    "records": {"errors", "kernels"},
    "heads": {"errors", "kernels", "records"},
    "engines": {"errors"},
    "io": {"errors", "records"},
    "track": {"errors", "kernels", "records"},
    "model": {"errors", "kernels", "records", "heads", "engines"},
    "pipeline": {"errors", "records", "io", "model"},
    "predictor": {"errors", "records", "io", "engines", "model", "pipeline", "track"},
    "cli": {"errors", "kernels", "records", "engines", "io", "model", "pipeline", "predictor", "track"},
    "batch": {"errors", "kernels", "records", "engines", "io", "model", "pipeline", "predictor", "track", "cli"},
    "infer": {"cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (``from a import b`` counts as a.b when
    a.b is a module, else as a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a package's ``__init__`` importing its own modules is not one: the
    package is then loaded first, so edges into a package from its own modules are left out)."""
    def edges(node: str) -> set[str]:
        return {t for t in graph[node] if not node.startswith(t + ".")}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges(node)):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "runtime" and len(parts) > 1 else None


def test_no_import_circles():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_circle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"p": {"p.m"}, "p.m": {"p"}}) is None  # a package importing its own module


def test_every_stage_of_runtime_is_known():
    stages = {_stage(m) for m in _modules() if _stage(m)}
    assert stages <= ALLOWED.keys(), f"stages without a rule in ALLOWED: {sorted(stages - ALLOWED.keys())}"


def test_runtime_stages_import_only_the_stages_below():
    wrong = []
    for module, targets in _graph().items():
        stage = _stage(module)
        if stage is None:
            continue
        for target in targets:
            other = _stage(target)
            if target.split(".")[0] in ("tools", "bench"):
                wrong.append(f"{module} imports {target}")
            elif other and other != stage and other not in ALLOWED[stage]:
                wrong.append(f"{module} ({stage}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("record", ["records.result", "records.frame", "records.letterbox", "records.spec"])
def test_records_import_no_io_and_no_engines(record):
    targets = _graph()[f"runtime.{record}"]
    assert not {_stage(t) for t in targets} & {"io", "engines", "model", "pipeline", "predictor", "cli"}, targets
