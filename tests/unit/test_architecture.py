"""The house rules as checks that fail when a rule is broken.

- The import graph keeps the contracts in .importlinter: the packages are layered, the domain
  (agentwatch) never imports prefect, not even inside a function, and nothing imports in a cycle.
  lint-imports reads the source, so an import hidden in a function counts like any other.
  Nor does a module import a package it is part of (whose __init__ imports it back).
- The environment is read in agentwatch/settings.py only.
- No module is longer than MAX_LINES.
- Every event name and resource is spelled once, in agentwatch/events.py.
- Every exception class lives in agentwatch/errors.py (but private signals raised and caught in
  one module, named `_Like_this`).

Each check also runs on a copy of the tree with a fault planted in it, to show it can fail.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agentwatch", "cli", "flows", "tasks", "deployments")
MAX_LINES = 400
SETTINGS = Path("agentwatch/settings.py")
EVENTS = Path("agentwatch/events.py")
ERRORS = Path("agentwatch/errors.py")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "*"}

# Event names, resource ids and resource labels: `agentwatch.agent.<state>`, `agentwatch.fleet`,
# `agentwatch.route` ... Not the Docker labels (`agentwatch.agent` alone, `agentwatch.probe.*`).
EVENT_LITERAL = re.compile(
    r"agentwatch\.(agent\.|alert\.|container\.|label\.|fleet|monitor|heartbeat|route\b|backend\b)"
)


def sources(root: Path, packages: tuple[str, ...] = PACKAGES) -> Iterator[tuple[Path, str]]:
    """(path relative to root, text) of every module of the packages."""
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            yield path.relative_to(root), path.read_text(encoding="utf-8")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages under `root` (not the installed ones: `root` comes first on the
    path, from the working directory and PYTHONPATH)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / ".importlinter")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


# `importer -> package` for each import of a package by one of its own modules: a cycle through the
# package's __init__, which the acyclic_siblings contract (siblings only) does not see.
ANCESTOR_IMPORTS = """
import sys
import grimp

graph = grimp.build_graph(*sys.argv[1:], cache_dir=None)
for module in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
        if module.startswith(imported + "."):
            print(f"{module} -> {imported}")
"""


def ancestor_imports(root: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", ANCESTOR_IMPORTS, *PACKAGES],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def environment_reads(root: Path) -> list[str]:
    """`file:line: what` for every read of the process environment in agentwatch/ outside settings:
    `<anything>.environ` / `.getenv` (os, an alias of it) and `from os import environ, getenv`."""
    found = []
    for path, text in sources(root, ("agentwatch",)):
        if path == SETTINGS:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT:
                found.append(f"{path}:{node.lineno}: .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                found.extend(
                    f"{path}:{node.lineno}: from os import {a.name}" for a in node.names if a.name in ENVIRONMENT
                )
    return found


def long_modules(root: Path) -> list[str]:
    """`file: N lines` for every module longer than MAX_LINES."""
    counts = ((path, len(text.splitlines())) for path, text in sources(root))
    return [f"{path}: {n} lines" for path, n in counts if n > MAX_LINES]


def event_literals(root: Path) -> list[str]:
    """`file:line: 'literal'` for every event name or resource spelled outside agentwatch/events.py.

    Docstrings may name events (they document them); any other string, f-string parts included, may not.
    """
    found = []
    for path, text in sources(root):
        if path == EVENTS:
            continue
        tree = ast.parse(text)
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        found.extend(
            f"{path}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and EVENT_LITERAL.match(node.value)
        )
    return found


def exceptions_outside_errors(root: Path) -> list[str]:
    """`file:line: Name` for every public exception class defined outside agentwatch/errors.py: a
    class whose base is Exception, BaseException, a `...Error`, or another exception class of ours."""
    classes: list[tuple[Path, ast.ClassDef, set[str]]] = []
    for path, text in sources(root):
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                classes.append((path, node, bases))
    exceptions = {"Exception", "BaseException"}
    while True:  # to the fixed point: a subclass of a subclass is an exception too
        more = {
            node.name for _, node, bases in classes if bases & exceptions or any(b.endswith("Error") for b in bases)
        }
        if more <= exceptions:
            break
        exceptions |= more
    return [
        f"{path}:{node.lineno}: {node.name}"
        for path, node, _ in classes
        if node.name in exceptions and path != ERRORS and not node.name.startswith("_")
    ]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The packages and the contracts, copied: a tree to plant faults in."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def plant(root: Path, module: str, code: str) -> None:
    path = root / module
    text = path.read_text(encoding="utf-8") + "\n\n" if path.exists() else ""
    path.write_text(text + code + "\n", encoding="utf-8")


# The tree keeps the rules.


def test_import_contracts_are_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_imports_its_own_package() -> None:
    found = ancestor_imports(ROOT)
    assert not found, "import the module that defines it, not the package:\n" + "\n".join(found)


def test_environment_is_read_only_in_settings() -> None:
    found = environment_reads(ROOT)
    assert not found, "read the environment through agentwatch.settings (environment()):\n" + "\n".join(found)


def test_no_module_is_too_long() -> None:
    found = long_modules(ROOT)
    assert not found, f"split these modules (at most {MAX_LINES} lines):\n" + "\n".join(found)


def test_exception_classes_live_in_the_errors_module() -> None:
    found = exceptions_outside_errors(ROOT)
    assert not found, "define exception classes in agentwatch/errors.py:\n" + "\n".join(found)


def test_event_names_are_spelled_only_in_events_module() -> None:
    found = event_literals(ROOT)
    assert not found, "use the names and resource builders of agentwatch.events:\n" + "\n".join(found)


# Each check fails on a planted fault.


def test_a_prefect_import_inside_a_domain_function_breaks_a_contract(copy: Path) -> None:
    plant(copy, "agentwatch/policy.py", "def _planted() -> None:\n    import prefect  # noqa: F401")
    done = lint_imports(copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "agentwatch.policy -> prefect" in done.stdout, done.stdout


def test_an_import_cycle_breaks_a_contract(copy: Path) -> None:
    plant(copy, "agentwatch/store/planted_a.py", "from . import planted_b  # noqa: F401")
    plant(copy, "agentwatch/store/planted_b.py", "from . import planted_a  # noqa: F401")
    done = lint_imports(copy)
    assert done.returncode == 1, done.stdout + done.stderr
    cycles = done.stdout.split("No cycles are allowed in agentwatch.store.", 1)
    assert len(cycles) == 2 and re.search(r"\.planted_[ab] -> \.planted_[ab]", cycles[1]), done.stdout


def test_a_layer_importing_upwards_breaks_a_contract(copy: Path) -> None:
    plant(copy, "agentwatch/models.py", "def _planted() -> None:\n    from . import store  # noqa: F401")
    done = lint_imports(copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "agentwatch.models is not allowed to import agentwatch.store" in done.stdout, done.stdout


def test_a_domain_import_of_the_prefect_layer_breaks_a_contract(copy: Path) -> None:
    plant(copy, "agentwatch/policy.py", "def _planted() -> None:\n    import flows.monitor  # noqa: F401")
    done = lint_imports(copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "agentwatch.policy -> flows.monitor" in done.stdout, done.stdout


def test_a_module_importing_its_own_package_is_found(copy: Path) -> None:
    plant(copy, "agentwatch/policy.py", "def _planted() -> None:\n    from . import AgentState  # noqa: F401")
    assert "agentwatch.policy -> agentwatch" in ancestor_imports(copy)


@pytest.mark.parametrize(
    "code",
    [
        "import os\n\n_HOME = os.environ.get('HOME')",
        "import os\n\n_HOME = os.getenv('HOME')",
        "from os import getenv\n\n_HOME = getenv('HOME')",
        "def _planted() -> str:\n    import os as _os\n\n    return _os.environ['HOME']",
    ],
    ids=["os.environ", "os.getenv", "from-os-import-getenv", "aliased-in-a-function"],
)
def test_an_environment_read_outside_settings_is_found(copy: Path, code: str) -> None:
    plant(copy, "agentwatch/policy.py", code)
    planted = [f for f in environment_reads(copy) if f.startswith(str(Path("agentwatch/policy.py")))]
    assert planted, environment_reads(copy)


def test_a_long_module_is_found(copy: Path) -> None:
    plant(copy, "flows/planted.py", "\n".join(f"X{i} = {i}" for i in range(MAX_LINES + 1)))
    assert f"{Path('flows/planted.py')}: {MAX_LINES + 1} lines" in long_modules(copy)


@pytest.mark.parametrize(
    "code",
    [
        "EVENT = 'agentwatch.agent.failed'",
        "def _planted(agent: str) -> str:\n    return f'agentwatch.agent.{agent}'",
        "MATCH = {'agentwatch.route': 'ops'}",
        "RESOURCE = 'agentwatch.fleet'",
    ],
    ids=["event-name", "f-string-resource", "resource-label", "resource-id"],
)
def test_an_event_literal_outside_the_events_module_is_found(copy: Path, code: str) -> None:
    plant(copy, "tasks/planted.py", code)
    assert [f for f in event_literals(copy) if f.startswith(str(Path("tasks/planted.py")))], event_literals(copy)


@pytest.mark.parametrize(
    "code",
    [
        "class PlantedError(Exception):\n    pass",
        "from agentwatch.errors import StoreError\n\n\nclass Planted(StoreError):\n    pass",
        "class PlantedBase(ValueError):\n    pass\n\n\nclass Planted(PlantedBase):\n    pass",
    ],
    ids=["from-exception", "from-ours", "subclass-of-subclass"],
)
def test_an_exception_class_outside_the_errors_module_is_found(copy: Path, code: str) -> None:
    plant(copy, "flows/planted.py", code + "\n\n\nclass _Signal(Exception):\n    pass")
    found = [
        f.split(": ", 1)[1] for f in exceptions_outside_errors(copy) if f.startswith(str(Path("flows/planted.py")))
    ]
    assert found and "_Signal" not in found, found
