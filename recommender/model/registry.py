"""The model registry on disk, and the one class that decides which version serves.

Layout of ``models_dir``::

    <version>/            one immutable version (see ``artifacts``), named by UTC time
    CURRENT               the serving version's name; replaced atomically (temp + os.replace)
    history.json          promotions, rollbacks and refusals, oldest first
    .staging-<v>-<pid>/   a version being written; renamed to <version> only when complete
    .lock                 flock held while CURRENT, history or versions change

Readers (predictor, API) only ever read ``CURRENT`` and then a complete version directory, so
they need no lock: a crash mid-save leaves a ``.staging`` directory that nothing points at,
and a crash mid-promotion leaves the old ``CURRENT`` intact.

"Previous" is defined by the promotion history, not by version age: promotions push onto a
stack and ``rollback`` pops it, so repeated rollbacks walk back through what actually served.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recommender.errors import ModelError
from recommender.model.artifacts import ModelArtifacts, read_metadata, write_json
from recommender.runtime import pid_alive
from recommender.settings import ModelSettings

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.json"
STAGING_PREFIX = ".staging-"
MAX_STACK = 50  # how many rollbacks deep the lineage goes
MAX_HISTORY = 1000  # events kept in history.json
# What the gate judges each of a version's two models on, and which way is better.
GATE_METRICS = (("ranking", "ndcg_at_10", True), ("rating", "rmse", False))
LOWER_IS_BETTER = frozenset({"rmse", "mae", "rmse_scorable", "mae_scorable"})


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class GateCheck:
    """One model's comparison with the current version's."""

    model: str
    metric: str
    candidate: float | None
    current: float | None
    limit: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate may replace the current version, and why: it passes only when
    both its ranking and its rating model pass (``checks``)."""

    accepted: bool
    version: str
    current_version: str | None
    tolerance: float
    forced: bool
    reason: str
    checks: tuple[GateCheck, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionInfo:
    """One row of ``models list``."""

    version: str
    created_at: str | None
    ndcg_at_10: float | None
    rmse: float | None
    rows: int | None
    status: str  # current | previous | available | refused | corrupt
    error: str | None = None


class ModelRegistry:
    """Owns versions, ``CURRENT``, the quality gate, promotion, rollback and pruning.

    The gate compares the candidate's ranking NDCG@10 and rating RMSE (from its metadata)
    with the current version's: the candidate is refused when either is worse by more than
    ``gate_tolerance`` relative to the current value (e.g. 0.02 = may be 2 % worse), and the
    reason names the model that failed. ``force`` overrides.
    """

    def __init__(self, models_dir: Path | str, retention: int = 5,
                 gate_tolerance: float = 0.02) -> None:
        self.root = Path(models_dir)
        self.retention = retention
        self.gate_tolerance = gate_tolerance
        self.on_promoted: list[Callable[[str], None]] = []

    @classmethod
    def from_settings(cls, model: ModelSettings) -> ModelRegistry:
        return cls(model.models_dir, model.retention, model.gate_tolerance)

    # --- reading ----------------------------------------------------------------------------

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise ModelError(f"invalid model version name {version!r}")
        return self.root / version

    def current_version(self) -> str | None:
        """The serving version (the ``CURRENT`` pointer), or None before the first promotion."""
        try:
            name = (self.root / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def previous(self) -> str | None:
        """The version ``rollback`` would restore (skipping versions pruned meanwhile)."""
        stack = self._stack()
        current = self.current_version()
        if stack and stack[-1] == current:
            stack.pop()
        while stack and not self.path(stack[-1]).is_dir():
            stack.pop()
        return stack[-1] if stack else None

    def version_dir(self, version: str) -> Path:
        """The directory of an existing version; ``ModelError`` naming it when absent."""
        path = self.path(version)
        if not path.is_dir():
            raise ModelError(f"model version {version!r} not found in {self.root}")
        return path

    def latest_version(self) -> str | None:
        """The newest complete version, promoted or not."""
        names = self.version_names()
        return names[-1] if names else None

    def version_names(self) -> list[str]:
        """Complete version directories, oldest first (names sort by creation time)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def metadata(self, version: str) -> dict[str, Any]:
        return read_metadata(self.path(version))

    def load(self, version: str | None = None, verify: bool = True) -> ModelArtifacts:
        """The artifacts of ``version``, or of ``CURRENT`` when None."""
        version = version or self.current_version()
        if version is None:
            raise ModelError(f"no model has been promoted yet in {self.root} "
                             "(run `recommender train`)")
        return ModelArtifacts.load(self.path(version), verify=verify)

    def history(self) -> list[dict[str, Any]]:
        try:
            events = json.loads((self.root / HISTORY_FILE).read_text())
        except FileNotFoundError:
            return []
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"promotion history {self.root / HISTORY_FILE} is corrupt: {exc}") from None
        return events if isinstance(events, list) else []

    def versions(self) -> list[VersionInfo]:
        current, previous = self.current_version(), self.previous()
        refused = {e["version"] for e in self.history() if e.get("action") == "refuse"}
        out = []
        for name in self.version_names():
            status = ("current" if name == current else "previous" if name == previous
                      else "refused" if name in refused else "available")
            try:
                meta = self.metadata(name)
            except ModelError as exc:
                out.append(VersionInfo(name, None, None, None, None, "corrupt", str(exc)))
                continue
            out.append(VersionInfo(
                version=name, created_at=meta.get("created_at"),
                ndcg_at_10=_metric(meta, "ndcg_at_10"), rmse=_metric(meta, "rmse"),
                rows=(meta.get("data") or {}).get("rows"), status=status))
        return out

    # --- writing a version ------------------------------------------------------------------

    def new_version(self) -> str:
        """A fresh, sortable name: the UTC time, with a suffix if that second is taken."""
        base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name, n = base, 0
        while (self.root / name).exists() or any(self.root.glob(f"{STAGING_PREFIX}{name}-*")):
            n += 1
            name = f"{base}-{n}"
        return name

    @contextmanager
    def staging(self, version: str) -> Iterator[Path]:
        """A private directory to write ``version`` into; renamed into place only if the
        block completes, removed if it raises. A half-written version is never visible."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(version)
        tmp = self.root / f"{STAGING_PREFIX}{version}-{os.getpid()}"
        tmp.mkdir()
        try:
            yield tmp
            read_metadata(tmp)  # the writer must have produced a readable version
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # --- the gate and promotion -------------------------------------------------------------

    def gate(self, version: str, force: bool = False) -> GateDecision:
        """Judge ``version`` against ``CURRENT`` on both models' metrics (no side effects)."""
        tol = self.gate_tolerance
        candidate_meta = self.metadata(version)
        current_version = self.current_version()
        current_meta = None
        if current_version and current_version != version:
            try:
                current_meta = self.metadata(current_version)
            except ModelError:
                current_meta = None

        def decide(accepted: bool, reason: str,
                   checks: tuple[GateCheck, ...] = ()) -> GateDecision:
            if force and not accepted:
                accepted, reason = True, f"forced: {reason}"
            return GateDecision(accepted, version, current_version, tol, force, reason, checks)

        if current_version is None:
            return decide(True, "no current model")
        if current_version == version:
            return decide(True, "already current")
        checks = tuple(_check(model, metric, higher, candidate_meta, current_meta,
                              current_version, tol)
                       for model, metric, higher in GATE_METRICS)
        failed = [c for c in checks if not c.passed]
        reason = "; ".join(c.reason for c in (failed or checks))
        return decide(not failed, reason, checks)

    def publish(self, version: str, force: bool = False) -> GateDecision:
        """Gate a freshly trained version and promote it if accepted, else record the
        refusal (the version stays on disk for inspection until pruned). Then prune."""
        with self.locked():
            decision = self.gate(version, force)
            if decision.accepted:
                self._promote(version, "train", decision)
            else:
                self._record("refuse", version, reason=decision.reason,
                             gate=decision.to_dict())
            self._prune()
        if decision.accepted:
            self._promoted(version)
        return decision

    def promote(self, version: str, force: bool = False) -> GateDecision:
        """Make ``version`` current by hand; the gate applies unless ``force``."""
        with self.locked():
            decision = self.gate(version, force)
            promoted = decision.accepted and decision.reason != "already current"
            if promoted:
                self._promote(version, "manual", decision)
        if decision.accepted:
            self._promoted(version)
        return decision

    def rollback(self) -> str:
        """Promote the version that served before the current one; returns its name."""
        with self.locked():
            target = self.previous()
            if target is None:
                raise ModelError("nothing to roll back to: no earlier promoted version is "
                                 f"left in {self.root}")
            ModelArtifacts.load(self.path(target))  # refuse to point CURRENT at a broken one
            old = self.current_version()
            stack = self._stack()
            while stack and stack[-1] != target:
                stack.pop()
            self._write_current(target)
            self._record("rollback", target, previous=old, reason=f"rolled back from {old}",
                         stack=stack)
        self._promoted(target)
        return target

    def prune(self) -> list[str]:
        """Delete versions beyond ``retention`` (never CURRENT or the previous one)."""
        with self.locked():
            return self._prune()

    # --- internals --------------------------------------------------------------------------

    def _promoted(self, version: str) -> None:
        """Run the ``on_promoted`` hooks (vector publication ...), outside the lock: a hook
        may take it again, and a slow one must not block the next promotion's gate."""
        for hook in self.on_promoted:
            hook(version)

    def _promote(self, version: str, reason: str, decision: GateDecision) -> None:
        ModelArtifacts.load(self.path(version))  # complete and checksums match
        old = self.current_version()
        self._write_current(version)
        self._record("promote", version, previous=old, reason=reason, gate=decision.to_dict(),
                     stack=[*self._stack(), version])

    def _write_current(self, version: str) -> None:
        tmp = self.root / f".{CURRENT_FILE}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / CURRENT_FILE)
        _fsync_dir(self.root)

    def _record(self, action: str, version: str, **fields: Any) -> None:
        event = {"action": action, "version": version,
                 "at": datetime.now(UTC).isoformat(timespec="seconds"), **fields}
        if "stack" in event:
            event["stack"] = event["stack"][-MAX_STACK:]
        write_json(self.root / HISTORY_FILE, [*self.history(), event][-MAX_HISTORY:])

    def _stack(self) -> list[str]:
        """The serving lineage: each promotion/rollback event stores the stack after it."""
        for event in reversed(self.history()):
            if "stack" in event:
                return list(event["stack"])
        return []

    def _prune(self) -> list[str]:
        current, previous = self.current_version(), self.previous()
        others = [v for v in self.version_names() if v != current]
        doomed = [v for v in others[: max(0, len(others) - self.retention)] if v != previous]
        for name in doomed:
            shutil.rmtree(self.path(name), ignore_errors=True)
        for tmp in self.root.glob(f"{STAGING_PREFIX}*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
        return doomed

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The registry's exclusive lock (not re-entrant): promotions, rollbacks and prunes
        hold it, and so does publishing the movie vectors that follow a promotion."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _check(model: str, metric: str, higher: bool, candidate_meta: dict[str, Any],
           current_meta: dict[str, Any] | None, current_version: str,
           tol: float) -> GateCheck:
    """One model's verdict: within ``tol`` of the current version's figure, or not."""
    candidate = _metric(candidate_meta, metric)
    current = None if current_meta is None else _metric(current_meta, metric)
    if candidate is None:
        return GateCheck(model, metric, None, current, None, False,
                         f"{model} model: candidate has no {metric}")
    if current is None:
        return GateCheck(model, metric, candidate, None, None, True,
                         f"{model} model: current {current_version} has no {metric}")
    limit = current - tol * abs(current) if higher else current + tol * abs(current)
    if (candidate >= limit) if higher else (candidate <= limit):
        return GateCheck(model, metric, candidate, current, limit, True,
                         f"{model} {metric} {candidate:.4f} vs current {current:.4f} "
                         f"(limit {limit:.4f})")
    return GateCheck(model, metric, candidate, current, limit, False,
                     f"{model} model regressed: {metric} {candidate:.4f} is "
                     f"{'below' if higher else 'above'} the limit {limit:.4f} (current "
                     f"{current_version}: {current:.4f}, tolerance {tol:.0%})")


def _metric(meta: dict[str, Any], metric: str) -> float | None:
    value = (meta.get("metrics") or {}).get(metric)
    return None if value is None else float(value)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
