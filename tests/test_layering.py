"""The import graph keeps the layering of docs/design.md §2.

- Nothing below `pipelines` imports a pipeline: rcc, rcc_numpy, entropy, container,
  diffusion/*, models/*, codecs/*, train/*, image_io, errors (and kernels, _runtime) must
  not import `fastdiffc.pipelines` or anything under it — neither at module level nor
  inside a function (a deferred import is still a dependency).
- The module-level imports (those executed when a module is imported) form no cycle.

The graph is read from the source with `ast` (nothing is imported), relative imports are
resolved against the importing module, and `from pkg import name` counts as an import of
`pkg.name` when that is a module of the package, else of `pkg`.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = "fastdiffc"
REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "python" / PACKAGE
# fastdiffc.kernels lives at the top level (the wheel maps kernels/ to fastdiffc/kernels, see
# pyproject's wheel.packages); scripts/dev_build.sh symlinks it into the package, a fresh clone
# has no symlink.
KERNELS = REPO / "kernels"

# Modules (and packages, with everything under them) that sit below the pipelines layer.
BELOW_PIPELINES = (
    "rcc", "rcc_numpy", "entropy", "container", "diffusion", "models", "codecs", "train",
    "image_io", "errors",
    "kernels", "_runtime",  # also low-level: used by diffusion and models
)
PIPELINES = f"{PACKAGE}.pipelines"

# Known violations, (importer, imported module). Each entry is a debt to pay off, not a
# licence: the test fails on any violation not listed here, and on an entry that no longer
# occurs (so the list shrinks when a debt is paid).
ALLOWED_UPWARD_IMPORTS: set[tuple[str, str]] = set()


def _walk(top: Path, package: list[str], out: dict[str, Path]) -> None:
    """Adds {dotted module name: file} for every .py file under `top`, as the package `package`."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = Path(dirpath).relative_to(top)
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            parts = [*package, *rel.parts]
            if fn != "__init__.py":
                parts.append(fn[:-3])
            out[".".join(parts)] = Path(dirpath) / fn


def _module_files() -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package, fastdiffc.kernels included:
    through the dev-build symlink python/fastdiffc/kernels when present, else from the top-level
    kernels/ folder (a fresh clone), as the wheel lays it out."""
    out: dict[str, Path] = {}
    _walk(ROOT, [PACKAGE], out)
    if not (ROOT / "kernels").exists() and KERNELS.is_dir():
        _walk(KERNELS, [PACKAGE, "kernels"], out)
    return out


def _where(name: str) -> str:
    """A module's file, relative to the repository (for messages)."""
    return str(MODULES[name].relative_to(REPO))


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, module: str | None, level: int) -> str:
    """The absolute module name of `from <level dots><module> import ...` inside `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]  # a plain module's relative imports start at its package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _target(name: str) -> str:
    """The innermost known module (or the name itself for an external one) that `name` refers to."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in MODULES:
        parts.pop()
    joined = ".".join(parts)
    return joined if joined in MODULES else name


class _Imports(ast.NodeVisitor):
    """Collects (imported module, at module level?) pairs of one module."""

    def __init__(self, importer: str):
        self.importer = importer
        self.depth = 0  # > 0 inside a function body: the import runs only when called
        self.found: list[tuple[str, bool, int]] = []

    def _visit_function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_If(self, node: ast.If):
        # `if TYPE_CHECKING:` imports never run; they still count for the layering check.
        test = node.test
        type_checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        if type_checking:
            self.depth += 1
            for child in node.body:
                self.visit(child)
            self.depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, name: str, lineno: int):
        self.found.append((name, self.depth == 0, lineno))

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self._add(_target(alias.name), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = _resolve(self.importer, node.module, node.level)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self._add(full if full in MODULES else _target(base), node.lineno)


def _imports(name: str) -> list[tuple[str, bool, int]]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))
    visitor = _Imports(name)
    visitor.visit(tree)
    return visitor.found


IMPORTS = {name: _imports(name) for name in MODULES}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_package_is_found():
    assert f"{PACKAGE}.pipelines.diffc" in MODULES and f"{PACKAGE}.rcc" in MODULES
    assert any(_under(m, f"{PACKAGE}.kernels") for m in MODULES), "kernels (symlink or top-level kernels/) not walked"


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("fastdiffc.pipelines.diffc", (".base", 1), "fastdiffc.pipelines.base"),
        ("fastdiffc.pipelines.diffc", ("", 2), "fastdiffc"),
        ("fastdiffc.pipelines", (".base", 1), "fastdiffc.pipelines.base"),
        ("fastdiffc.models.residual", ("codecs.plain", 2), "fastdiffc.codecs.plain"),
        ("fastdiffc.rcc", ("fastdiffc.errors", 0), "fastdiffc.errors"),
    ],
)
def test_relative_imports_resolve(importer, source, expected):
    module, level = source
    assert _resolve(importer, module.lstrip(".") or None, level) == expected


def test_nothing_below_pipelines_imports_a_pipeline():
    low = [m for m in MODULES if any(_under(m, f"{PACKAGE}.{p}") for p in BELOW_PIPELINES)]
    assert len(low) > 20, low
    found = set()
    where = []
    for importer in low:
        for target, _, lineno in IMPORTS[importer]:
            if _under(target, PIPELINES):
                found.add((importer, target))
                if (importer, target) not in ALLOWED_UPWARD_IMPORTS:
                    where.append(f"{_where(importer)}:{lineno} imports {target}")
    assert not where, "modules below pipelines import a pipeline (docs/design.md §2):\n" + "\n".join(where)
    stale = ALLOWED_UPWARD_IMPORTS - found
    assert not stale, f"allow-list entries that no longer occur (remove them): {sorted(stale)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import) — Tarjan."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_module_level_imports_have_no_cycle():
    graph = {m: {t for t, top, _ in IMPORTS[m] if top and t in MODULES and t != m} for m in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "import cycles among module-level imports:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# Model-defining modules get a file's content hash from models.hashing, never from the registry,
# which imports them to load models (the registry <-> unet circle, issue 12). Owed by files this
# change does not own; remove an entry when its module imports models.hashing instead.
REGISTRY = f"{PACKAGE}.models.registry"
ALLOWED_REGISTRY_IMPORTS: set[str] = set()


def test_model_modules_do_not_import_the_registry():
    models = [m for m in MODULES if _under(m, f"{PACKAGE}.models") and m not in (REGISTRY, f"{PACKAGE}.models")]
    assert f"{PACKAGE}.models.unet" in models and f"{PACKAGE}.models.hashing" in models
    bad = [f"{_where(m)}:{lineno} imports the registry"
           for m in models if m not in ALLOWED_REGISTRY_IMPORTS
           for target, _, lineno in IMPORTS[m] if target == REGISTRY]
    assert not bad, "model modules import models.registry (use models.hashing):\n" + "\n".join(bad)
