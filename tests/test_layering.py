"""The packages import one way: model -> export -> engine -> runtime, benchmarks on top.

Every module is parsed with ``ast`` (function-level imports included, nothing is
imported), and each stage may import only the stages below it. ``m2ae/`` is the ground
floor: what several stages share (errors, atomic writes, image I/O, the engine sidecar,
platform detection) lives there and imports no stage; only the CLI, which registers
every stage's commands, reaches up. ``trt_plugins`` (the two ops at every level: numpy
reference, torch, ONNX, ONNX Runtime, CUDA and plugin) imports no stage and serves them
all: the pruned torch model in ``model/`` runs its torch ops.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {  # folder -> package, as pyproject's package-dir maps them
    "m2ae": "m2ae",
    "model": "m2ae.model",
    "export": "m2ae.export",
    "trt_plugins": "m2ae.trt_plugins",
    "runtime": "m2ae.runtime",
    "benchmarks": "m2ae.benchmarks",
}
STAGES = tuple(package for package in FOLDERS.values() if package != "m2ae")
FORBIDDEN = {  # folder -> the stages none of its modules may import
    "m2ae": STAGES,
    "model": ("m2ae.export", "m2ae.runtime", "m2ae.benchmarks"),
    "trt_plugins": ("m2ae.model", "m2ae.export", "m2ae.runtime", "m2ae.benchmarks"),
    "export": ("m2ae.runtime", "m2ae.benchmarks"),
    "runtime": ("m2ae.export", "m2ae.benchmarks"),
    "benchmarks": (),
}
ALLOWED = {  # (folder, module file) -> imports allowed despite FORBIDDEN
    ("m2ae", "cli.py"): STAGES,  # registers every stage's commands
}


def module_name(folder: str, path: Path) -> str:
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((FOLDERS[folder], *parts))


def imported_modules(folder: str, path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from a import b`` counts as ``a.b`` too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(folder, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(folder: str) -> list[str]:
    problems = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        allowed = ALLOWED.get((folder, path.name), ())
        for module in sorted(imported_modules(folder, path)):
            if any(within(module, stage) for stage in FORBIDDEN[folder]) and not any(
                within(module, ok) for ok in allowed
            ):
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    return problems


def test_module_names_follow_package_dir():
    assert module_name("runtime", ROOT / "runtime" / "trt_engine.py") == "m2ae.runtime.trt_engine"
    assert module_name("model", ROOT / "model" / "data" / "__init__.py") == "m2ae.model.data"


@pytest.mark.parametrize("folder", [folder for folder, forbidden in FORBIDDEN.items() if forbidden])
def test_nothing_imports_back(folder):
    assert violations(folder) == []

