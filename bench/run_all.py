"""Run the benchmarks in sequence, write ``bench/results/<name>.json`` (``<name>.quick.json``
for ``--quick``) and regenerate ``BENCHMARKS.md``.

    python -m bench.run_all [--quick] [--only replay,ingest,train,predict,serve]

The stack must be reachable (``recommender stack up`` is idempotent and is called here). A
benchmark that fails is recorded with its traceback and the next one runs; every private
topic, keyspace, index and process is removed at the end, also after Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
import traceback
from typing import Any

from bench import report
from bench.common import (
    REPO,
    RESULTS_DIR,
    Clock,
    base_settings,
    close_workspace,
    log,
    machine,
    provenance,
    versions,
    workspace,
)

BENCHMARKS = report.ORDER
RUNNABLE = (*report.ORDER, *report.ON_REQUEST)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short phases (a few minutes in total)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names "
                        f"({', '.join(RUNNABLE)}; {', '.join(report.ON_REQUEST)} only when "
                        "named)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in RUNNABLE]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(RUNNABLE)}")
    args.names = [n for n in RUNNABLE if n in names]  # dependency order, not argument order
    return args


def main(argv: list[str] | None = None) -> int:
    from recommender.stack import manager

    args = parse(argv)
    configure_logging()
    settings = base_settings()
    log("stack up (idempotent: running services are reused)")
    manager.up(settings.stack, on_event=log)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    workspace(settings)
    failures = 0
    try:
        for name in args.names:
            log(f"=== {name} ({'quick' if args.quick else 'full'}) ===")
            module = importlib.import_module(f"bench.{name}")
            clock = Clock()
            try:
                result = module.run(settings, args.quick)
            except Exception:  # noqa: BLE001 - recorded; the remaining benchmarks still run
                result = failed(name, args.quick, clock, traceback.format_exc(), settings)
            if result.get("error"):  # also a benchmark that reports the stages it finished
                failures += 1
                log(f"{name} failed:\n{result['error']}")
            result["doc"] = describe(module.__doc__)
            path = RESULTS_DIR / f"{name}{'.quick' if args.quick else ''}.json"
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")
            for t in result.get("targets", []):
                log(f"{name}: {t['name']}: {t['value']} {t['unit']} (goal {t['op']} {t['goal']}) "
                    f"met={t['met']}")
            log(f"wrote {path.relative_to(REPO)}")
    finally:
        close_workspace()
        out = report.write(RESULTS_DIR, REPO / "BENCHMARKS.md")
        report.write_readme(RESULTS_DIR, REPO / "README.md")
        log(f"wrote {out.relative_to(REPO)}")
    return 1 if failures else 0


def configure_logging() -> None:
    """The jobs' own batch logs at INFO, the clients' chatter only when it is an error: a
    benchmark's console is read to follow its steps."""
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("recommender").setLevel(logging.INFO)  # the jobs' own batch logs
    logging.getLogger("kafka").setLevel(logging.ERROR)  # event-loop timing chatter
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)


def describe(doc: str | None) -> str:
    """A module docstring as Markdown: paragraphs joined into lines, list items kept."""
    out = []
    for para in (doc or "").strip().split("\n\n"):
        items, current = [], []
        for line in para.splitlines():
            stripped = line.strip()
            if stripped[:2] in {f"{n}." for n in range(1, 10)} | {"* ", "- "} and current:
                items.append(" ".join(current))
                current = []
            current.append(stripped)
        items.append(" ".join(current))
        out.append("\n".join(items))
    return "\n\n".join(out).replace("``", "`")


def run_one(name: str) -> None:
    """``python -m bench.<name> [--quick]``: one benchmark through ``main`` (its JSON
    written, BENCHMARKS.md regenerated, everything private cleaned up)."""
    import sys

    raise SystemExit(main(["--only", name, *(a for a in sys.argv[1:] if a == "--quick")]))


def failed(name: str, quick: bool, clock: Clock, error: str, settings: Any) -> dict[str, Any]:
    return {"benchmark": name, "quick": quick, **provenance(clock, settings),
            "started_at": clock.started_at,
            "duration_s": round(time.monotonic() - clock.t0, 1), "machine": machine(),
            "versions": versions(settings), "error": error, "targets": []}


if __name__ == "__main__":
    raise SystemExit(main())
