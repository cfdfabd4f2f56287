"""PySpark's worker daemon (``spark.python.daemon.module``), with CPython gh-103200 worked
around on Python 3.10 and 3.11.

Before each task a PySpark worker calls ``importlib.invalidate_caches()``. On those Python
versions that re-reads, in pure Python, the directory of every zip archive on ``sys.path``,
and Spark always puts ``pyspark.zip`` and py4j's archive there: a cost per task that can
exceed the work of a predictor micro-batch. Python 3.12 made the
invalidation lazy. Here an archive is re-read only when it changed on disk, which is what
the invalidation exists for. The workers inherit the fix: the daemon forks them.
"""

from __future__ import annotations

import os
import sys
import zipimport


def reread_only_changed_archives() -> None:
    reread = zipimport.zipimporter.invalidate_caches
    seen: dict[str, tuple[int, int]] = {}

    def invalidate_caches(self: zipimport.zipimporter) -> None:
        try:
            stat = os.stat(self.archive)
            signature = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            signature = (-1, -1)
        if seen.get(self.archive) != signature:
            reread(self)
            seen[self.archive] = signature

    zipimport.zipimporter.invalidate_caches = invalidate_caches  # type: ignore[method-assign]


if __name__ == "__main__":
    if sys.version_info < (3, 12):
        reread_only_changed_archives()
    from pyspark.daemon import manager

    manager()
