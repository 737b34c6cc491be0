"""The architecture rules the import contract (`lint-imports`, pyproject.toml) does not cover: no import cycles
between any two modules (lazy imports included), and no ``_private`` name imported across packages."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "pintopic"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """``(imported module, imported names)`` for every import statement of a module, function bodies included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield (target, []) if target in modules else (base, [alias.name])


def _resolve(target: str, modules) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _subpackage(module: str) -> str:
    """``pintopic.features.store`` -> ``pintopic.features``; top-level modules are their own package."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles():
    modules = _modules()
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in _imports(name, path, modules):
            resolved = _resolve(target, modules) if target.startswith("pintopic") else None
            if resolved and resolved != name and not name.startswith(resolved + "."):
                edges[name].add(resolved)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_crosses_a_package():
    modules = _modules()
    crossings = []
    for name, path in modules.items():
        for target, names in _imports(name, path, modules):
            if not target.startswith("pintopic"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [part for part in target.split(".") if part.startswith("_") and not part.startswith("__")]
            if private and _subpackage(_resolve(target, modules) or target) != _subpackage(name):
                crossings.append(f"{name} imports {private} from {target}")
    assert not crossings, crossings


def test_the_contract_sees_lazy_imports(tmp_path):
    """The layers contract is only worth something if an upward import inside a function breaks it."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "repo"
    shutil.copytree(PACKAGE, copy / "pintopic")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "pintopic" / "dataset" / "sampling.py", "a", encoding="utf-8") as handle:
        handle.write("\n\ndef upward():\n    from pintopic.classify import catalog\n    return catalog\n")
    lint_imports = Path(sys.executable).parent / "lint-imports"
    broken = subprocess.run([str(lint_imports)], cwd=copy, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert broken.returncode != 0 and "pintopic.dataset.sampling -> pintopic.classify.catalog" in broken.stdout
    kept = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stdout
