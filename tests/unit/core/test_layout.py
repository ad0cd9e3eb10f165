"""The package layout and its import rules (docs/architecture.md, "Layers").

The rules are data (`MAY_IMPORT`): for each part of the package (a subpackage, or a top-level
module), the other parts its modules may import. The test walks every module's imports with
`ast` (function-level imports included: they defer an import, they do not remove the
dependency), and fails on an import the rules do not allow, on a part the rules do not name, on
MLflow imported outside its two adapters (tracking, registry) or their client handed to another
part, and on any import cycle between modules.
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
    "jobs": FOUNDATION | {"hypernym"},
    # the few-shot rows train through the core (hypernym.train.Trainer)
    "demo": FOUNDATION | {"data", "recipes", "registry", "tracking", "transfer", "train"},
    # `hypernym gpu-check`: every stage once on this machine's GPU, through the library entries
    "gpucheck": FOUNDATION | {"hypernym", "data", "recipes", "registry", "serving", "tracking",
                              "train", "transfer"},
    "cli": FOUNDATION | {"hypernym", "taxonomy", "data", "tracking", "registry", "train",
                         "transfer", "deploy", "serving", "recipes", "jobs", "demo", "gpucheck"},
    "__main__": {"cli"},
}
# The two MLflow adapters: tracking (runs, metrics, lineage) and registry (the model registry).
MLFLOW_ALLOWED = ("hypernym.tracking", "hypernym.registry")
# The MLflow client they share; everything else calls their public functions.
MLFLOW_CLIENT = "hypernym.tracking._backend"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root`` (a package's name for its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def source_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` in ``module`` reads from (relative imports resolved)."""
    base = node.module or ""
    if node.level:
        anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
        base = ".".join([*anchor, base] if base else anchor)
    return base


def imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Every module name ``path`` imports, at any depth (relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = source_module(node, module, is_package)
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


def test_mlflow_is_imported_only_by_the_mlflow_adapters():
    offenders = [name for name, path in module_names(PACKAGE, "hypernym").items()
                 if not name.startswith(MLFLOW_ALLOWED)
                 and any(m == "mlflow" or m.startswith("mlflow.")
                         for m in imports(path, name, path.name == "__init__.py"))]
    assert offenders == []


def private_imports(root: Path, package: str, of: str | None = None) -> list[str]:
    """``from <module> import _name`` in the modules of ``package`` under ``root``, where the
    module imported from is another module of package ``of`` (``package`` itself by default):
    a private name used outside the module that defines it."""
    of = of or package
    bad = []
    for name, path in sorted(module_names(root, package).items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] == of and node.module != name:
                bad += [f"{name} imports {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return bad


def test_no_module_imports_another_modules_private_names():
    assert private_imports(PACKAGE, "hypernym") == []
    assert private_imports(REPO / "tests", "tests", of="hypernym") == []


def test_the_checker_catches_a_private_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _helper():\n    pass\n")
    (pkg / "b.py").write_text("from pkg.a import _helper\n")
    assert private_imports(pkg, "pkg") == ["pkg.b imports pkg.a._helper"]


def test_only_the_mlflow_adapters_hold_an_mlflow_client():
    graph = import_graph(PACKAGE, "hypernym")
    holders = sorted(m for m, targets in graph.items() if MLFLOW_CLIENT in targets
                     and not m.startswith(MLFLOW_ALLOWED))
    assert holders == []


def tracking_names(path: Path, module: str, is_package: bool) -> set[str]:
    """The names ``path`` takes from `hypernym.tracking`: ``from hypernym.tracking import X``
    and ``tracking.X`` after ``from hypernym import tracking``."""
    tree = ast.parse(path.read_text(), str(path))
    names, aliases = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = source_module(node, module, is_package)
            if base == "hypernym.tracking":
                names.update(alias.name for alias in node.names)
            elif base == "hypernym":
                aliases.update(a.asname or a.name for a in node.names if a.name == "tracking")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases):
            names.add(node.attr)
    return names


def test_other_parts_call_only_the_public_tracking_api():
    """No raw client or module handed out: outside the adapters, only `__all__` is used."""
    import hypernym.tracking

    public = set(hypernym.tracking.__all__)
    assert not public & {"client", "mlflow_module"}
    used = {}
    for name, path in module_names(PACKAGE, "hypernym").items():
        if name.startswith(MLFLOW_ALLOWED):
            continue
        extra = tracking_names(path, name, path.name == "__init__.py") - public
        if extra:
            used[name] = sorted(extra)
    assert used == {}


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
