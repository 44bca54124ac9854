"""Guards on the layout and dependency rules of DESIGN.md."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PLATFORM = Path(__file__).resolve().parents[3] / "platform"
PACKAGE = PLATFORM / "trunkline"


def test_platform_is_a_source_root_only() -> None:
    # ``platform`` is a stdlib module: a package or module here would shadow it.
    stray = [p.name for p in PLATFORM.iterdir() if p.suffix == ".py" or p.name == "__init__.py"]
    assert stray == []
    assert (PACKAGE / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (
            "gateway",
            (
                "sqlalchemy",
                "alembic",
                "trunkline.models",
                "trunkline.portal",
                "trunkline.tenancy",
                "trunkline.keys",
                "trunkline.pools",
            ),
        ),
        ("gateway/routing", ("litestar", "httpx", "starlette", "sqlalchemy", "uvicorn")),
        ("gateway/admission", ("litestar", "httpx", "starlette", "sqlalchemy", "uvicorn")),
        ("gateway/cascade", ("litestar", "httpx", "starlette", "sqlalchemy", "uvicorn")),
    ],
)
def test_dependency_rules(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for name in _imports(path)
        if name.startswith(forbidden)
    ]
    assert offenders == []


def test_the_gateway_process_never_loads_the_orm() -> None:
    code = (
        "import sys, trunkline.apps.gateway;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith('sqlalchemy') or m == 'trunkline.models'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _distribution(requirement: str) -> str:
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_library_the_platform_imports_is_a_declared_dependency() -> None:
    """A library installed only as another's dependency goes when that one stops needing it:
    ``gateway/connection_pool.py`` imports httpcore, which only httpx brought; an httpx
    without it would have stopped the gateway at import, where it is meant to warn that
    orphaned connections are not reclaimed."""
    project = tomllib.loads((PLATFORM.parent / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    declared = {_distribution(r) for r in (*project["dependencies"], *extras)}
    providers = importlib.metadata.packages_distributions()
    undeclared = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _imports(path):
            top = name.partition(".")[0]
            if top in sys.stdlib_module_names or top == "trunkline":
                continue
            if not {_distribution(d) for d in providers.get(top, [top])} & declared:
                undeclared.add(f"{path.relative_to(PACKAGE)} imports {top}")
    assert sorted(undeclared) == []
