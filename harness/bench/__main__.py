"""``harness bench --out results/bench.json [--only NAME ...]``"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path

import harness.bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness bench")
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--only", nargs="*", help="bench modules to run (default: all)")
    options = parser.parse_args(argv)
    report: dict = {}
    failures = []
    modules = sorted(m.name for m in pkgutil.iter_modules(harness.bench.__path__) if not m.name.startswith("_"))
    for name in modules:
        if options.only and name not in options.only:
            continue
        print(f"bench: {name} ...", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"harness.bench.{name}").run(report)
        except Exception:  # one broken bench must not hide the others' figures
            failures.append(name)
            traceback.print_exc()
        print(f"bench: {name} done in {time.perf_counter() - started:.1f} s", flush=True)
    report["bench_machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))
    print(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
