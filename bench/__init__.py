"""Benchmarks of the pipeline against the real stack: ``python -m bench.run_all [--quick]``.

Each module ``bench/<name>.py`` has ``run(settings, quick) -> dict``; the dict (machine, versions,
dataset, numbers, targets and whether each was met) is written to ``bench/results/<name>.json``
and ``BENCHMARKS.md`` is generated from all of them. Benchmarks measure; they never assert.
"""
