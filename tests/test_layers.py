"""The house's floors: which of our packages may import which.

- ``loyalnet``: the foundation (errors, settings, secret files, model arrays, the chain's wire
  format); it imports nothing else of ours.
- ``store_node`` and ``coordinator``: the two parts, each on the foundation only. The
  coordinator holds no face code, so it never imports the store's.
- ``simulations``: runs stores and a coordinator in one process, on both parts.
- ``loyalnet_cli``: the command line, console and demos, on top of everything.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("loyalnet", "store_node", "coordinator", "simulations", "loyalnet_cli")
ALLOWED: dict[str, set[str]] = {
    "loyalnet": {"loyalnet"},
    "store_node": {"loyalnet", "store_node"},
    "coordinator": {"loyalnet", "coordinator"},
    "simulations": {"loyalnet", "store_node", "coordinator", "simulations"},
    "loyalnet_cli": set(OURS),
}


def imported_packages(source: Path) -> set[str]:
    """Our top-level packages that ``source`` imports, anywhere in the file."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names} & set(OURS)


@pytest.mark.parametrize("package", OURS)
def test_a_package_imports_only_the_floors_below_it(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: found for path, found in wrong.items() if found} == {}


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        "import os\n\ndef later():\n    from store_node.face import FacePipeline\n"
        "    import coordinator.home\n    from . import sibling\n",
        encoding="utf-8",
    )
    assert imported_packages(source) == {"store_node", "coordinator"}
