"""The layering of docs/architecture.md, enforced: every module of src/jacgeom is parsed with
ast (imports inside functions included) and

- the import graph has no cycle;
- only the dispatch layer (jacgeom._backends, jacgeom._dispatch) and the Numba kernels
  themselves touch the compiled code: importing jacgeom._core or jacgeom._numba, or reading
  ``_backends.core`` / ``_backends.numba_kernels``;
- the dispatch layer imports no public module (it sits below them);
- jacgeom._validation and jacgeom._numba import nothing above them;
- jacgeom.reference imports numpy, the standard library, itself and the activation
  registry only, and the registry imports nothing of jacgeom.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "jacgeom"

DISPATCH_LAYER = frozenset({"jacgeom._backends", "jacgeom._dispatch"})
COMPILED = ("jacgeom._core", "jacgeom._numba")
# The attributes of jacgeom._backends that hold the compiled modules.
COMPILED_ATTRIBUTES = frozenset({"core", "numba_kernels"})

# Import edges allowed to close a cycle, (importer, imported), while a cycle is being
# removed; test_allowed_cycle_edges_still_close_a_cycle fails once an entry is not needed.
# Empty: kernel_layer -> montecarlo -> network -> kernel_layer was the last (issue 19).
CYCLE_EDGES_ALLOWED: frozenset[tuple[str, str]] = frozenset()

# jacgeom.reference may import these of jacgeom besides itself: the activation registry
# (numpy and scipy.special), shared by every backend so that phi and phi' have one definition.
REFERENCE_MAY_IMPORT = frozenset({"jacgeom.activations"})
THIRD_PARTY_OF_REFERENCE = frozenset({"numpy"})
THIRD_PARTY_OF_ACTIVATIONS = frozenset({"numpy", "scipy"})


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)  # absolute names, as written
    compiled_attribute_reads: list[int] = field(default_factory=list)  # line numbers


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _absolute(module: Module, level: int, name: str | None) -> str:
    """The absolute name of a relative import ``from <level dots><name> import ...``."""
    if level == 0:
        assert name is not None
        return name
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{name}" if name else package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: the bodies of ``if TYPE_CHECKING:`` are left out (they are
    read by type checkers only; their else branches run)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _parse(path: Path) -> Module:
    name, is_package = _module_name(path)
    return _parse_source(Module(name, path, is_package), path.read_text(encoding="utf-8"))


def _parse_source(module: Module, source: str) -> Module:
    tree = ast.parse(source, filename=str(module.path))
    backends_aliases = set()
    for node in _runtime_nodes(tree):  # every import, at module level or inside a function
        if isinstance(node, ast.Import):
            for alias in node.names:
                module.imports.add(alias.name)
                if alias.name == "jacgeom._backends" and alias.asname:
                    backends_aliases.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.level, node.module)
            for alias in node.names:
                # `from a import b`: b is the module a.b, or a name defined in a
                full = f"{base}.{alias.name}"
                module.imports.add(full)
                if full == "jacgeom._backends":
                    backends_aliases.add(alias.asname or alias.name)
                if base == "jacgeom._backends" and alias.name in COMPILED_ATTRIBUTES:
                    module.compiled_attribute_reads.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            module.imports.add(node.args[0].value)
    for node in _runtime_nodes(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in COMPILED_ATTRIBUTES
            and isinstance(node.value, ast.Name)
            and node.value.id in backends_aliases
        ):
            module.compiled_attribute_reads.append(node.lineno)
    return module


def _modules() -> dict[str, Module]:
    paths = sorted((SRC / PACKAGE).rglob("*.py"))
    return {m.name: m for m in (_parse(p) for p in paths if "__pycache__" not in p.parts)}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of jacgeom that importing ``name`` names (the longest known prefix: `from
    jacgeom.reference import svd_values` names jacgeom.reference), or None outside jacgeom."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES or candidate in COMPILED:
            return candidate
    return PACKAGE


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        yield ".".join(parts[:end])


def _edges(module: Module) -> set[str]:
    """The modules of jacgeom whose code runs when ``module``'s imports run: the one named
    and the packages above it (other than jacgeom itself and module's own packages, which
    are already being imported)."""
    own = set(_ancestors(module.name))
    out = set()
    for name in module.imports:
        target = _resolve(name)
        if target is None or target == module.name:
            continue
        out.add(target)
        out.update(p for p in _ancestors(target) if p != PACKAGE and p not in own)
    out.discard(module.name)
    return out


GRAPH = {name: _edges(module) for name, module in MODULES.items()}


def _third_party(module: Module) -> set[str]:
    return {
        name.split(".")[0]
        for name in module.imports
        if name.split(".")[0] not in (PACKAGE, "__future__")
        and name.split(".")[0] not in sys.stdlib_module_names
    }


def _touches_compiled(module: Module) -> list[str]:
    found = [
        f"imports {name}"
        for name in sorted(module.imports)
        if any(name == c or name.startswith(c + ".") for c in COMPILED)
    ]
    found += [
        f"reads _backends.<compiled module> (line {n})" for n in module.compiled_attribute_reads
    ]
    return found


def _exempt(name: str) -> bool:
    return name in DISPATCH_LAYER or name == "jacgeom._numba" or name.startswith("jacgeom._numba.")


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _without_allowed_edges() -> dict[str, set[str]]:
    graph = {name: set(edges) for name, edges in GRAPH.items()}
    for importer, imported in CYCLE_EDGES_ALLOWED:
        graph.get(importer, set()).discard(imported)
    return graph


# ---------------------------------------------------------------------------------------


def test_the_parser_sees_the_package() -> None:
    # A guard against a test that passes because it read nothing.
    assert {"jacgeom", "jacgeom.layer", "jacgeom._dispatch", "jacgeom.reference"} <= set(MODULES)
    assert "jacgeom._dispatch" in GRAPH["jacgeom.layer"]
    assert "jacgeom.reference.layer" in GRAPH["jacgeom._dispatch"]
    assert "jacgeom.reference" in GRAPH["jacgeom._dispatch"]  # the package runs first
    assert "jacgeom._core" in GRAPH["jacgeom._backends"]
    assert "jacgeom._numba" in GRAPH["jacgeom._backends"]


def test_no_import_cycle() -> None:
    cycle = _find_cycle(_without_allowed_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_allowed_cycle_edges_still_close_a_cycle() -> None:
    for importer, imported in CYCLE_EDGES_ALLOWED:
        graph = _without_allowed_edges()
        graph.setdefault(importer, set()).add(imported)
        assert imported in GRAPH.get(importer, set()) and _find_cycle(graph), (
            f"{importer} -> {imported} no longer closes a cycle: delete it from CYCLE_EDGES_ALLOWED"
        )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_dispatch_layer_touches_compiled_code(name: str) -> None:
    if _exempt(name):
        return
    found = _touches_compiled(MODULES[name])
    assert not found, (
        f"{name} {'; '.join(found)}: call the kernel through jacgeom._dispatch "
        "(docs/architecture.md)"
    )


@pytest.mark.parametrize("name", sorted(DISPATCH_LAYER))
def test_dispatch_layer_imports_no_public_module(name: str) -> None:
    allowed = {"jacgeom.activations", "jacgeom.reference", *DISPATCH_LAYER, *COMPILED}
    bad = {
        target
        for target in GRAPH[name]
        if not any(target == a or target.startswith(a + ".") for a in allowed)
    }
    assert not bad, f"{name} imports {sorted(bad)}, which sit above the dispatch layer"


REFERENCE = sorted(
    n for n in MODULES if n == "jacgeom.reference" or n.startswith("jacgeom.reference.")
)


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_imports_numpy_and_itself_only(name: str) -> None:
    module = MODULES[name]
    outside = {
        target
        for target in GRAPH[name]
        if target != "jacgeom.reference"
        and not target.startswith("jacgeom.reference.")
        and target not in REFERENCE_MAY_IMPORT
    }
    assert not outside, f"{name} imports {sorted(outside)} of jacgeom"
    assert _third_party(module) <= THIRD_PARTY_OF_REFERENCE, (
        f"{name} imports {sorted(_third_party(module) - THIRD_PARTY_OF_REFERENCE)}"
    )


# Modules below the public API, with what they may import: (jacgeom modules by prefix,
# third-party top-level packages); the standard library is always allowed.
LOWER_LAYERS = {
    "jacgeom._validation": (frozenset(), frozenset({"numpy"})),
    "jacgeom._numba": (frozenset({"jacgeom._numba"}), frozenset({"numba", "numpy", "scipy"})),
}


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if any((n + ".").startswith(k + ".") for k in LOWER_LAYERS))
)
def test_lower_layers_import_only_what_they_may(name: str) -> None:
    key = next(k for k in LOWER_LAYERS if (name + ".").startswith(k + "."))
    own, third_party = LOWER_LAYERS[key]
    outside = {t for t in GRAPH[name] if not any((t + ".").startswith(o + ".") for o in own)}
    assert not outside, f"{name} imports {sorted(outside)} of jacgeom"
    assert _third_party(MODULES[name]) <= third_party, (
        f"{name} imports {sorted(_third_party(MODULES[name]) - third_party)}"
    )


def test_activation_registry_imports_nothing_of_jacgeom() -> None:
    module = MODULES["jacgeom.activations"]
    assert not GRAPH["jacgeom.activations"]
    assert _third_party(module) <= THIRD_PARTY_OF_ACTIVATIONS


def test_the_checks_catch_what_they_forbid() -> None:
    source = (
        "from . import _backends\n"
        "def f():\n"
        "    from ._numba import jacobian\n"
        "    return _backends.core.jacobian, jacobian\n"
    )
    probe = _parse_source(Module("jacgeom.probe", SRC / "jacgeom" / "probe.py", False), source)
    assert "jacgeom._numba.jacobian" in probe.imports
    assert probe.compiled_attribute_reads == [4]
    assert _touches_compiled(probe)
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
