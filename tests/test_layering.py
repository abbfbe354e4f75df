"""The house's rules, checked on the code itself: the layers import downwards only.

- ``import stackkit`` (and the CLI module) pulls in neither torch, timm nor base_models.
- No module of ``stackkit`` imports ``base_models`` (base_models depends on stackkit, never the
  reverse), at import time or inside a function.
- No import cycle between stackkit's modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "stackkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in a file, resolved to modules."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from stackkit.cv import stacking` names a module
                out.append((f"{node.module}.{a.name}", id(node) in top))
                out.append((node.module, id(node) in top))
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        deps = set()
        for name, _ in _imports(path):
            if name in files and name != mod:
                deps.add(name)
        graph[mod] = deps
    return graph


def test_stackkit_never_imports_base_models():
    bad = [
        (str(p.relative_to(ROOT)), name)
        for p in PKG.rglob("*.py")
        for name, _ in _imports(p)
        if name == "base_models" or name.startswith("base_models.")
    ]
    assert not bad, f"stackkit imports base_models: {bad}"


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package's __init__ re-exporting its own modules is not a cycle of the design
    cycles = [
        c for c in cycles if not any(c[i + 1].startswith(c[i] + ".") for i in range(len(c) - 1))
    ]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", ["stackkit", "stackkit.cli"])
def test_import_pulls_in_no_torch_timm_or_base_models(module):
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in ('torch', 'timm', 'torchvision', 'base_models') if m in sys.modules); "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "", f"`import {module}` imported {out.stdout.strip()}"


def test_runner_help_is_quick_and_lists_the_job_commands():
    """`python -m base_models --help` answers without importing torch (it took ~10 s with it)."""
    code = (
        "import sys, runpy; sys.argv = ['base_models', '--help']\n"
        "try:\n    runpy.run_module('base_models', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
    for cmd in ("prepare", "run-fold", "assemble"):
        assert cmd in out.stdout
