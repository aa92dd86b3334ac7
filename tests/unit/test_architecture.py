"""The domain package stays free of Prefect (docs/decisions.md): fast to import and test, reusable."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import agentwatch


def test_importing_every_domain_module_imports_no_prefect() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(agentwatch.__path__, "agentwatch."))
    assert "agentwatch.policy" in modules and "agentwatch.store" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m == 'prefect' or m.startswith('prefect.')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
