"""The public surface: every package's __all__ is complete and importable."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

PACKAGES = [
    "sheaf",
    "sheaf.core",
    "sheaf.data",
    "sheaf.task",
    "sheaf.strategies",
    "sheaf.backends",
    "sheaf.evaluation",
    "sheaf.run",
    "sheaf.privacy",
    "sheaf.quantize",
    "sheaf.secagg",
    "sheaf.compress",
    "sheaf.deploy",
    "sheaf.ui",
    "sheaf.cli",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    for public in module.__all__:
        assert getattr(module, public) is not None, public


@pytest.mark.parametrize("name", PACKAGES[1:])
def test_every_public_name_of_a_submodule_is_re_exported_by_its_package(name: str) -> None:
    package = importlib.import_module(name)
    folder = package.__path__[0]
    import pkgutil

    for info in pkgutil.iter_modules([folder]):
        # private modules, and modules exported whole (e.g. sheaf.task.optim), are exempt
        if info.name.startswith("_") or info.name in package.__all__:
            continue
        module = importlib.import_module(f"{name}.{info.name}")
        for public in getattr(module, "__all__", []):
            assert public in package.__all__, f"{name}.{info.name}.{public} is not in {name}.__all__"


def test_public_functions_and_classes_have_docstrings() -> None:
    for name in PACKAGES:
        module = importlib.import_module(name)
        for public in module.__all__:
            obj = getattr(module, public)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"{name}.{public} has no docstring"


def test_importing_sheaf_does_not_import_torch() -> None:
    code = "import sys, sheaf, sheaf.task; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_importing_sheaf_or_its_cli_does_not_import_grpc() -> None:
    code = "import sys, sheaf, sheaf.cli; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
