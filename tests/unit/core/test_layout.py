"""The package layout and its import rules (docs/architecture.md, "Layers").

The rules are data (`MAY_IMPORT`): for each part of the package (a subpackage, or a top-level
module), the other parts its modules may import. The test walks every module's imports with
`ast` (function-level imports included: they defer an import, they do not remove the
dependency), and fails on an import the rules do not allow, on a part the rules do not name, on
MLflow imported outside the tracking adapter, and on any import cycle between modules.
"""

from __future__ import annotations

import ast
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "platform" / "hypernym"

# Each part may import itself and the parts listed; keep docs/architecture.md in step.
FOUNDATION = {"errors", "settings", "sections", "config", "runtime", "progress", "version"}
MAY_IMPORT: dict[str, set[str]] = {
    "hypernym": {"version", "registry"},  # the package root: __version__ and a lazy load_backbone
    "errors": set(),
    "version": set(),
    "settings": set(),
    "sections": set(),  # the optim and registry sections of a recipe
    "config": {"errors", "sections"},
    "runtime": {"settings"},
    "progress": set(),
    # Checks before any work: is every location reachable from every node, the tracking login?
    "preflight": FOUNDATION | {"hypernym", "tracking"},
    "taxonomy": FOUNDATION,
    "data": FOUNDATION | {"taxonomy", "preflight"},
    "tracking": FOUNDATION,
    "registry": FOUNDATION | {"hypernym", "taxonomy", "tracking"},
    "train": FOUNDATION | {"hypernym", "preflight", "taxonomy", "data", "tracking", "registry"},
    "transfer": FOUNDATION | {"hypernym", "taxonomy", "data", "tracking", "registry", "train"},
    "deploy": FOUNDATION,
    # Ray Serve deployment of a registered model (`hypernym serve`).
    "serving": FOUNDATION | {"hypernym", "registry"},
    "recipes": FOUNDATION | {"data", "train", "transfer"},
    # Unfinished training runs (`hypernym runs`): MLflow and run storage side by side.
    "runs": FOUNDATION | {"hypernym", "data", "tracking", "train"},
    "jobs": FOUNDATION | {"hypernym", "runs"},
    "demo": FOUNDATION | {"data", "recipes", "registry", "tracking", "transfer"},
    "cli": FOUNDATION | {"hypernym", "taxonomy", "data", "tracking", "registry", "train",
                         "transfer", "deploy", "serving", "recipes", "jobs", "demo", "runs"},
    "__main__": {"cli"},
}
# The tracking adapter, and the pyfunc file MLflow itself loads from a registered model.
MLFLOW_ALLOWED = ("hypernym.tracking", "hypernym.registry.pyfunc_model",
                  # the signature and input example: types of MLflow's model format itself
                  "hypernym.registry.serving_schema")


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root`` (a package's name for its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Every module name ``path`` imports, at any depth (relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # maybe submodules
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (names that are not modules are dropped)."""
    modules = module_names(root, package)
    graph = {}
    for name, path in modules.items():
        found = imports(path, name, path.name == "__init__.py")
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def part(module: str) -> str:
    """``pkg.data.reader`` -> ``data``; ``pkg.cli`` -> ``cli``; ``pkg`` -> ``pkg``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def layer_violations(graph: dict[str, set[str]], rules: dict[str, set[str]]) -> list[str]:
    """Imports the rules do not allow, and parts the rules do not name."""
    bad = []
    for module, targets in sorted(graph.items()):
        mine = part(module)
        if mine not in rules:
            bad.append(f"{module}: part {mine!r} has no import rule (add it to MAY_IMPORT "
                       "and to docs/architecture.md)")
            continue
        for target in sorted(targets):
            theirs = part(target)
            if theirs != mine and theirs not in rules[mine]:
                bad.append(f"{module} imports {target}: {mine} may import only "
                           f"{sorted(rules[mine])}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_follows_the_layer_rules():
    graph = import_graph(PACKAGE, "hypernym")
    assert len(graph) > 50  # the walk found the package
    assert layer_violations(graph, MAY_IMPORT) == []


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph(PACKAGE, "hypernym")) == []


def test_mlflow_is_imported_only_by_the_tracking_adapter():
    offenders = [name for name, path in module_names(PACKAGE, "hypernym").items()
                 if not name.startswith(MLFLOW_ALLOWED)
                 and any(m == "mlflow" or m.startswith("mlflow.")
                         for m in imports(path, name, path.name == "__init__.py"))]
    assert offenders == []


def test_the_checker_catches_a_cycle_and_a_layer_breach(tmp_path):
    """A tiny package with the old cli <-> demo cycle (both imports inside functions) and a
    data module importing train."""
    pkg = tmp_path / "pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "train").mkdir()
    for init in (pkg, pkg / "data", pkg / "train"):
        (init / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("def demo():\n    from pkg.demo import run_demo\n")
    (pkg / "demo.py").write_text("def run_demo():\n    from pkg.cli import run_recipe\n")
    (pkg / "data" / "reader.py").write_text("from ..train import loop\n")
    (pkg / "train" / "loop.py").write_text("from pkg.data.reader import x\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.cli"] == {"pkg.demo"}
    assert graph["pkg.data.reader"] == {"pkg.train", "pkg.train.loop"}  # relative, resolved
    assert cycles(graph) == [["pkg.cli", "pkg.demo"], ["pkg.data.reader", "pkg.train.loop"]]
    rules = {"pkg": set(), "data": set(), "train": {"data"}, "cli": {"demo"}, "demo": set()}
    assert layer_violations(graph, rules) == [
        "pkg.data.reader imports pkg.train: data may import only []",
        "pkg.data.reader imports pkg.train.loop: data may import only []",
        "pkg.demo imports pkg.cli: demo may import only []",
    ]
    del rules["demo"]
    assert "part 'demo' has no import rule" in layer_violations(graph, rules)[2]


def test_platform_is_still_the_standard_library():
    assert hasattr(platform, "python_version")
    assert "site-packages" not in (platform.__file__ or "") or "lib" in platform.__file__
    assert Path(platform.__file__).parent == Path(subprocess.__file__).parent
    assert not (REPO / "platform" / "__init__.py").exists()


def test_import_hypernym_is_cheap():
    # The CLI imports hypernym before parsing arguments: torch/ray/mlflow must not load.
    code = ("import sys, hypernym, hypernym.config; "
            "print(sorted({'torch', 'ray', 'mlflow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_runs():
    exe = Path(sys.executable).parent / "hypernym"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("run", "prepare", "pretrain", "finetune", "demo", "submit", "jobs", "models"):
        assert command in out.stdout
