"""The layout's boundaries: the core imports no image or text module, and neither modality
imports the other. Read from the source (every import statement, lazy ones included) and
checked again in a fresh interpreter."""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "ssl_jax")


def imported_modules(path):
    """Every module an import statement of ``path`` names (``from a import b`` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_files(name):
    root = os.path.join(PACKAGE, name)
    return [
        os.path.join(folder, file)
        for folder, _, files in os.walk(root)
        for file in files
        if file.endswith(".py")
    ]


def ssl_jax_imports(path):
    # "ssl_jax.x.y" from "from ssl_jax.x import y" may be an attribute: the module is enough.
    return {name for name in imported_modules(path) if name.split(".")[0] == "ssl_jax"}


def test_core_imports_only_the_core():
    offenders = {}
    for path in package_files("core"):
        outside = {
            name for name in ssl_jax_imports(path)
            if not (name.startswith("ssl_jax.core") or name == "ssl_jax")
        }  # fmt: skip
        if outside:
            offenders[os.path.relpath(path, REPO)] = sorted(outside)
    assert not offenders, f"core modules importing outside ssl_jax.core: {offenders}"
    assert len(package_files("core")) >= 14  # the check read the package


@pytest.mark.parametrize("package, other", [("vision", "text"), ("text", "vision")])
def test_a_modality_does_not_import_the_other(package, other):
    offenders = {
        os.path.relpath(path, REPO): sorted(
            name for name in ssl_jax_imports(path) if name.startswith(f"ssl_jax.{other}")
        )
        for path in package_files(package)
    }
    assert not {path: names for path, names in offenders.items() if names}


def test_core_trainer_loads_no_method_model_or_modality():
    script = (
        "import sys, ssl_jax.core.train, ssl_jax.core.loop, ssl_jax.core.checkpoint;"
        "print(sorted(m for m in sys.modules if m.startswith(('ssl_jax.vision', 'ssl_jax.text',"
        " 'ssl_jax.methods', 'ssl_jax.models', 'tensorflow'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", loaded


def test_the_checker_sees_lazy_and_nested_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from etils import epy\nwith epy.lazy_imports():\n    from ssl_jax.vision import data\n"
        "def f():\n    import ssl_jax.text.data\n"
    )
    assert {"ssl_jax.vision", "ssl_jax.vision.data", "ssl_jax.text.data"} <= ssl_jax_imports(path)
