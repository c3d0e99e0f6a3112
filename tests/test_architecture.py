"""The package's layers, as docs/architecture.md draws them: a module imports only its own layer and the
layers below, and no module imports itself back through another."""

import ast
from pathlib import Path

import worldmodels

PACKAGE = Path(worldmodels.__file__).parent

# Lowest first. A module's layer is that of its longest listed prefix.
LAYERS = [
    ("worldmodels", "worldmodels.errors", "worldmodels.config", "worldmodels.core", "worldmodels.pools",
     "worldmodels.reference"),
    ("worldmodels.data", "worldmodels.envs", "worldmodels.models"),
    ("worldmodels.evaluation", "worldmodels.vmc", "worldmodels.dreamer"),
    ("worldmodels.artifacts", "worldmodels.probes", "worldmodels.reporting"),
    ("worldmodels.stages",),
    ("worldmodels.cli",),
]


def _layer(module: str) -> int:
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("worldmodels", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every worldmodels module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("worldmodels"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {name for name in names if name in modules} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("worldmodels")}
    return found


def test_every_module_imports_only_its_layer_and_those_below():
    modules = _modules()
    upward = [f"{module} (layer {_layer(module)}) imports {imported} (layer {_layer(imported)})"
              for module, path in modules.items() for imported in _imports(path, modules)
              if _layer(imported) > _layer(module)]
    assert upward == []


def test_the_package_has_no_import_cycles():
    modules = _modules()
    graph = {module: {m for m in _imports(path, modules) if m in modules and m != module}
             for module, path in modules.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_top_level_holds_only_the_command_the_error_type_and_the_loaders():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "artifacts.py", "cli.py", "errors.py"]
