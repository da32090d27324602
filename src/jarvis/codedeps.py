"""A stage's code dependencies: the import closure of its modules inside ``src/jarvis``, computed from the AST.

Function-local imports count (the CLI and the stages import lazily), and so does every package ``__init__`` on the
way to a module (importing ``jarvis.model.vision`` runs ``jarvis/model/__init__.py``). The closure is what DVC
hashes and what Snakemake compares mtimes of, so editing any file a stage really imports reruns that stage.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "jarvis"
SRC = Path(__file__).resolve().parents[1]  # .../src


def module_file(module: str, src: Path = SRC) -> Path | None:
    """``jarvis.a.b`` -> ``src/jarvis/a/b.py`` or ``src/jarvis/a/b/__init__.py``; None if it is not a module."""
    base = src.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _package_inits(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


# Import statements sit only in statement lists (an expression cannot hold one), so the walk follows those and
# skips every expression: a tenth of the nodes, and a stage process or Snakemake run resolves its code deps that
# much sooner (issue 13). tests/test_dag.py checks it against a walk of every node.
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def _walk(tree: ast.AST):
    """The statements of ``tree`` (and their nested statements), without the bodies of ``if TYPE_CHECKING:``
    (annotations only; never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        for field in _STATEMENT_LISTS:
            children = getattr(node, field, None)
            if isinstance(children, list):  # `IfExp.body` / `Lambda.body` are expressions, not lists
                todo.extend(children)


def _imports_of(tree: ast.AST, current: str, is_pkg: bool) -> set[str]:
    out: set[str] = set()
    for node in _walk(tree):  # function-local imports included; `if TYPE_CHECKING:` imports never run
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the current package
                pkg = current.split(".") if is_pkg else current.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from jarvis import paths` names a module
    return {m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")}


@functools.cache
def _parsed(path: Path, stamp: tuple[int, int]) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _tree(path: Path) -> ast.Module:
    """``path`` parsed once per version of the file (cli.py is read once per command function otherwise)."""
    st = path.stat()
    return _parsed(path, (st.st_mtime_ns, st.st_size))


@functools.cache
def _direct(module: str, src: Path) -> frozenset[str]:
    path = module_file(module, src)
    if path is None:
        return frozenset()
    tree = _tree(path)
    found = {m for m in _imports_of(tree, module, path.name == "__init__.py") if module_file(m, src) is not None}
    return frozenset(found | set(_package_inits(module)))


def function_imports(module: str, function: str, src: Path = SRC) -> set[str]:
    """The jarvis modules imported inside one top-level function of ``module`` (e.g. one CLI command)."""
    path = module_file(module, src)
    if path is None:
        raise ValueError(f"{module}: not a module under {src}")
    tree = _tree(path)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return {m for m in _imports_of(node, module, False) if module_file(m, src) is not None}
    raise ValueError(f"{module} has no function {function!r}")


def closure(roots: set[str] | list[str], src: Path = SRC) -> set[str]:
    """Every jarvis module reachable from ``roots`` by imports (module-level and function-local)."""
    seen: set[str] = set()
    todo = [r for r in roots if module_file(r, src) is not None]
    missing = [r for r in roots if module_file(r, src) is None]
    if missing:
        raise ValueError(f"not modules under {src}: {missing}")
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_direct(m, src) - seen)
    return seen


def files(modules: set[str], src: Path = SRC, root: Path | None = None) -> list[str]:
    """Sorted project-relative paths of ``modules`` (``src/jarvis/...``)."""
    root = root or src.parent
    out = set()
    for m in modules:
        p = module_file(m, src)
        assert p is not None
        out.add(p.relative_to(root).as_posix())
    return sorted(out)


def _cli_shared(src: Path) -> tuple[str, ...]:
    """What every `jarvis <command>` process may run of jarvis.cli besides its own command function: ``main``,
    ``build_parser`` and the module's private helpers (``_resolver``, ``_known``, ...)."""
    path = module_file(f"{PACKAGE}.cli", src)
    assert path is not None
    tree = _tree(path)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_")]
    return ("main", "build_parser", *names)


def cli_command_deps(command_function: str, src: Path = SRC) -> set[str]:
    """Modules a `jarvis <command>` process imports: the entry modules (``jarvis``, ``jarvis.__main__``,
    ``jarvis.cli``), then the imports inside the CLI functions that command runs, closed transitively. The other
    commands' function-local imports are not run, so they are not dependencies."""
    entry = {PACKAGE, f"{PACKAGE}.__main__", f"{PACKAGE}.cli"}
    roots: set[str] = set()
    for fn in (*_cli_shared(src), command_function):
        roots |= function_imports(f"{PACKAGE}.cli", fn, src)
    return entry | closure(roots - {f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}, src)
