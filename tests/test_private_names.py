"""No slyker module reaches into another library's private names: a library may rename or
drop them in any release, and nothing but a failing request would tell. An AST scan of every
module under slyker/ finds

* attribute access (read, write, or ``getattr``/``setattr``/``hasattr``/``delattr`` with a
  literal name) of a ``_name`` (one leading underscore, not a dunder) that slyker itself does
  not define (as a function, class, variable, parameter, or attribute set on ``self``/``cls``):
  on another object, and on ``self``/``cls``/``super()`` too, where it can only be a library
  base class's;
* imports of ``_name`` or from a ``_module`` of another package;

and a look at slyker's classes finds methods overriding a library base class's ``_name``.

What must stay is in :data:`ALLOWED`, each with its reason; an entry nothing uses any more
fails too, so the list stays short and true.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import slyker

SLYKER = Path(slyker.__file__).parent

# (module, name): why it stays.
ALLOWED: dict[tuple[str, str], str] = {
    ("slyker/chat/writer.py", "_meta"): "Tortoise's model metadata (Model._meta), its only"
    " access to a model's field objects (to_db_value) and field names",
    # slyker.sqlite subclasses Tortoise's SQLite client and transaction context to survive
    # cancelled callers; it also uses their _lock and _connection, names slyker defines
    # elsewhere too, which the scan therefore cannot tell apart.
    ("slyker/sqlite.py", "_parent"): "Tortoise's transaction wrapper keeps its client there",
    ("slyker/sqlite.py", "_trxlock"): "Tortoise's transaction context's lock, released on a"
    " failed start",
    ("slyker/sqlite.py", "_in_transaction"): "overridden: Tortoise's factory of transaction"
    " contexts (BEGIN IMMEDIATE, cancellation-safe)",
    # slyker.ratelimit subclasses quart-rate-limiter's RateLimiter: its hooks are the only
    # place to make the check one atomic store call and skip routes without limits.
    ("slyker/ratelimit.py", "_before_request"): "overridden: the limiter's request hook",
    ("slyker/ratelimit.py", "_after_request"): "overridden: the limiter's response hook",
    ("slyker/ratelimit.py", "_create_key"): "overridden: keys of shared (cross-route) limits",
    ("slyker/ratelimit.py", "_get_limits_for_view_function"): "the limiter's own look-up of"
    " a route's limits, called from the overridden hooks",
    ("slyker/ratelimit.py", "_should_skip"): "the limiter's own skip check (same)",
    # slyker.wrappers subclasses Quart's request and WebSocket connection.
    ("slyker/wrappers.py", "_cached_json"): "Quart's request JSON cache, which get_json (here"
    " overridden) fills and reads",
    ("slyker/wrappers.py", "_create_websocket_from_scope"): "Quart's factory of the websocket"
    " object, called from the overridden __call__",
    ("slyker/services/accounts.py", "_replace"): "namedtuple's documented method (its names"
    " start with _ so as not to clash with field names)",
}

OWN_OBJECTS = {"self", "cls"}
NAME_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


@dataclass(frozen=True)
class Reach:
    module: str
    line: int
    name: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.name}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_own(node: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``."""
    if isinstance(node, ast.Name):
        return node.id in OWN_OBJECTS
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def _named_attribute(node: ast.AST) -> tuple[ast.expr, str] | None:
    """(object, name) of ``obj._name`` or ``getattr(obj, "_name", ...)`` and its kin."""
    if isinstance(node, ast.Attribute):
        return node.value, node.attr
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in NAME_FUNCTIONS
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[0], node.args[1].value
    return None


def defined_names(trees: list[ast.Module]) -> set[str]:
    """Private names slyker defines: functions, classes, variables and parameters, and
    attributes it sets on ``self``/``cls`` (never those it sets on other objects)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and _is_own(node.value)
            ):
                names.add(node.attr)
    return {name for name in names if is_private(name)}


def _private_import(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level or (node.module or "").split(".")[0] == "slyker":
            return []  # slyker's own
        modules = [node.module or ""]
        imported = [alias.name for alias in node.names]
    else:
        modules = [alias.name for alias in node.names if alias.name.split(".")[0] != "slyker"]
        imported = []
    return [
        *(part for module in modules for part in module.split(".") if is_private(part)),
        *(name for name in imported if is_private(name)),
    ]


def reach_ins(module: str, tree: ast.Module, defined: set[str]) -> list[Reach]:
    found: list[Reach] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found += [Reach(module, node.lineno, name) for name in _private_import(node)]
            continue
        named = _named_attribute(node)
        if named is None:
            continue
        _, name = named
        if is_private(name) and name not in defined:  # on self too: a base class's
            found.append(Reach(module, node.lineno, name))
    return found


def scan(sources: dict[str, str]) -> list[Reach]:
    """Every reach-in of the modules ``sources`` (module path: source), which are the whole
    of what counts as slyker's own."""
    trees = {module: ast.parse(source, module) for module, source in sources.items()}
    defined = defined_names(list(trees.values()))
    return sorted(
        (reach for module, tree in trees.items() for reach in reach_ins(module, tree, defined)),
        key=lambda reach: (reach.module, reach.line, reach.name),
    )


def slyker_sources() -> dict[str, str]:
    root = SLYKER.parent
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(SLYKER.rglob("*.py"))
    }


def overridden_library_privates(sources: dict[str, str]) -> list[Reach]:
    """Methods (and class attributes) of slyker's classes named ``_name`` that a base class
    from another library has too: overriding it depends on that private name."""
    found: list[Reach] = []
    for module, source in sources.items():
        classes = [n for n in ast.walk(ast.parse(source, module)) if isinstance(n, ast.ClassDef)]
        if not classes:
            continue
        imported = importlib.import_module(module.removesuffix(".py").replace("/", "."))
        for node in classes:
            cls = getattr(imported, node.name, None)
            if not isinstance(cls, type):
                continue  # a class defined inside a function
            library_bases = [b for b in cls.__mro__[1:] if b.__module__.split(".")[0] != "slyker"]
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = item.name
                elif isinstance(item, ast.Assign | ast.AnnAssign):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    names = [t.id for t in targets if isinstance(t, ast.Name)]
                    if not names:
                        continue
                    name = names[0]
                else:
                    continue
                if is_private(name) and any(name in vars(base) for base in library_bases):
                    found.append(Reach(module, item.lineno, name))
    return found


def test_no_module_reaches_into_another_librarys_private_names() -> None:
    sources = slyker_sources()
    found = scan(sources) + overridden_library_privates(sources)
    unexpected = [str(reach) for reach in found if (reach.module, reach.name) not in ALLOWED]
    assert unexpected == [], "new reach-ins (use a public API, or add to ALLOWED with why)"
    unused = set(ALLOWED) - {(reach.module, reach.name) for reach in found}
    assert unused == set(), "ALLOWED entries nothing uses any more: remove them"


def test_the_scan_covers_the_whole_package() -> None:
    sources = slyker_sources()
    assert "slyker/database.py" in sources and "slyker/chat/writer.py" in sources
    assert len(sources) == len(list(SLYKER.rglob("*.py")))


SNIPPET = """
import quart_cors._internal
from tortoise import context
from tortoise.context import _current_context, get_current_context
from tortoise._private_module import anything
from slyker.database import _sqlite_path
from . import _relative


class Client(Base):
    def __init__(self):
        self._mine = 1

    def _hook(self):
        return super()._base_hook() + self._lock + cls._other

    def use(self, other):
        context._current_context.set(other)
        other._saved_in_db = True
        getattr(other, "_conn")
        setattr(other, "_token", None)
        return other._mine, other._hook(), other.__dict__, other.public


def helper(_argument):
    return _argument, _argument._inner
"""


def test_the_scan_finds_each_kind_of_reach_in_and_nothing_else() -> None:
    found = {(reach.line, reach.name) for reach in scan({"slyker/snippet.py": SNIPPET})}
    assert found == {
        (2, "_internal"),  # a private module
        (4, "_current_context"),  # a private name imported
        (5, "_private_module"),  # from a private module
        (15, "_base_hook"),  # a base class's, through super()
        (15, "_lock"),  # a base class's, on self (slyker sets no ``self._lock`` here)
        (15, "_other"),  # a base class's, on cls
        (18, "_current_context"),  # read on another module
        (19, "_saved_in_db"),  # set on another object
        (20, "_conn"),  # through getattr
        (21, "_token"),  # through setattr
        (26, "_inner"),  # on a parameter (defining ``_argument`` does not define ``_inner``)
    }
    # Not flagged: slyker's own imports, names slyker defines (``_mine``, set on self, and
    # ``_hook``, on any object), dunders and public names.


OVERRIDING = """
import logging


class Handler(logging.Handler):
    terminator = "\\n"

    def _at_fork_reinit(self):
        pass

    def _mine(self):
        pass

    def emit(self, record):
        pass
"""


def test_overriding_a_library_base_classs_private_method_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("snippet_overriding")
    exec(compile(OVERRIDING, "snippet_overriding.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    found = overridden_library_privates({"snippet_overriding.py": OVERRIDING})
    # logging.Handler has _at_fork_reinit; _mine is the snippet's own, emit is public.
    assert [(reach.line, reach.name) for reach in found] == [(8, "_at_fork_reinit")]
