"""Benchmark loading a registry: parse_registry of 1,000 / 10,000 / 50,000 HTTP agents.

    python bench/registry_load.py [--sizes 1000,10000,50000] [--repeat 3] [--compare DIR]

Each agent has an id, a name, labels, probe.http.url (a URL of its own), timeout and
failure_threshold. Every size runs in a fresh process (its peak RSS is that size's), which reports:

- yaml: `yaml.load` with the C loader alone, the collector on (what parse_registry used to run),
  before any registry is built;
- cold: the first parse_registry of the text in that process (what a shard's flow-run process pays
  every cycle), then the best of --repeat more with every cache cleared where the code has one;
- cached: the same text again (what the monitor pays every cycle after the first);
- edited: one agent's name changed, so the registry cache misses (the URL checks are cached);
- load_registry: the same, through the file (read + sha256 + cache);
- RSS: resident set after imports; the peak (VmHWM) after the cold parses (one registry alive)
  and at the end (after the edited texts and the file: two sources kept).

--with-prefect imports prefect first, as in a monitor process: a bigger heap makes each pass of the
cyclic garbage collector longer.

--compare DIR runs the same processes with the agentwatch package under DIR (an export of an
older commit: `git archive HEAD agentwatch | tar -x -C DIR`) and prints both side by side with
the ratio old / new. Figures only: nothing here asserts a time (the machines are shared).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def registry_text(n: int, edit: int | None = None) -> str:
    import yaml

    agents = [
        {
            "id": f"a-{i}",
            "name": f"agent {i}" + (" (edited)" if i == edit else ""),
            "labels": {"kind": "ok"},
            "probe": {"http": {"url": f"http://127.0.0.1:{30000 + i % 4}/health/{i}"}},
            "timeout": "2s",
            "failure_threshold": 1,
        }
        for i in range(n)
    ]
    return yaml.dump({"agents": agents}, Dumper=yaml.CSafeDumper, sort_keys=False)


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(n: int, repeat: int) -> dict[str, float]:
    """In this process (a fresh one per size): the figures of one size."""
    import yaml

    from agentwatch.registry import load, load_registry, parse_registry, urls

    def clear() -> None:
        # Absent in code from before the caches: then every parse is cold anyway.
        if hasattr(load, "clear_registry_cache"):
            load.clear_registry_cache()
        if hasattr(urls, "_url_problem"):
            urls._url_problem.cache_clear()

    text = registry_text(n)
    cap = 4 * len(text.encode())
    out: dict[str, float] = {"rss_start": _status_mib("VmRSS")}
    yamls = [_timed(lambda: yaml.load(text, Loader=yaml.CSafeLoader)) for _ in range(repeat)]
    out["cold_first"] = _timed(lambda: parse_registry(text, max_bytes=cap))
    colds, edits, cached = [], [], []
    for _ in range(repeat):
        clear()
        colds.append(_timed(lambda: parse_registry(text, max_bytes=cap)))
    out["rss_peak_one"] = _status_mib("VmHWM")
    for _ in range(repeat):
        cached.append(_timed(lambda: parse_registry(text, max_bytes=cap)))
    for r in range(repeat):
        edited = registry_text(n, edit=r)
        edits.append(_timed(lambda t=edited: parse_registry(t, max_bytes=cap)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "fleet.yaml")
        path.write_text(text)
        load_registry(path, max_bytes=cap)
        files = [_timed(lambda: load_registry(path, max_bytes=cap)) for _ in range(repeat)]
    out.update(
        yaml=min(yamls),
        cold=min(colds),
        edited=min(edits),
        cached=min(cached),
        file=min(files),
        rss_peak=_status_mib("VmHWM"),
        text_mib=len(text) / 2**20,
    )
    return out


def run_child(n: int, repeat: int, code: Path, with_prefect: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(n), "--repeat", str(repeat), "--code", str(code)]
    cmd += ["--with-prefect"] if with_prefect else []
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


ROWS = [
    ("yaml.load (C loader, gc on), s", "yaml"),
    ("parse_registry cold, first in process, s", "cold_first"),
    ("parse_registry cold, caches cleared, s", "cold"),
    ("parse_registry, same text again, s", "cached"),
    ("parse_registry, one agent edited, s", "edited"),
    ("load_registry, same file again, s", "file"),
    ("RSS after imports, MiB", "rss_start"),
    ("peak RSS, one registry alive, MiB", "rss_peak_one"),
    ("peak RSS at the end, MiB", "rss_peak"),
]


def _fmt(value: float) -> str:
    return f"{value:.4f}" if value < 1 else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="a directory holding an older agentwatch package")
    parser.add_argument("--with-prefect", action="store_true", help="import prefect in each process first")
    parser.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        sys.path.insert(0, str(args.code.resolve()))
        if args.with_prefect:
            import prefect  # noqa: F401
        print(json.dumps(measure(args.child, args.repeat)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"python {sys.version.split()[0]}, best of {args.repeat} (cold first: one run), one process per size"
        + (", prefect imported" if args.with_prefect else "")
    )
    for n in sizes:
        new = run_child(n, args.repeat, ROOT, args.with_prefect)
        old = run_child(n, args.repeat, args.compare, args.with_prefect) if args.compare else None
        print(f"\n{n:,} agents ({new['text_mib']:.1f} MiB of YAML)")
        head = f"  {'':44} {'this tree':>10}"
        print(head + (f" {'--compare':>10} {'old/new':>8}" if old else ""))
        for label, key in ROWS:
            line = f"  {label:44} {_fmt(new[key]):>10}"
            if old:
                ratio = old[key] / new[key] if new[key] else float("inf")
                line += f" {_fmt(old[key]):>10} {ratio:>7.1f}x"
            print(line)
        print(f"  {'cold / same text again':44} {new['cold'] / new['cached']:>9.0f}x")


if __name__ == "__main__":
    main()
