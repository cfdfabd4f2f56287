"""``simulate ab``: policies compared on simulated sessions, with confidence intervals.

Steps: load the registry's CURRENT model (and any ``model:<version>`` asked for, which must
share its held-out rows); re-cut the ratings it was trained from by its recorded split
(``simulate.data``); serve every simulated user one session per policy through the feed rule
(``simulate.session``); report per policy the mean of each session metric over users with a
paired bootstrap interval (``simulate.confidence``) and the uplift over ``random``.

Every policy's session for a user draws from the same seeded random stream (common random
numbers), so policies differ by their ranking and not by luck of the draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recommender.errors import InvalidRequest, ModelError
from recommender.feed import TOP_N
from recommender.model.artifacts import ModelArtifacts
from recommender.model.registry import ModelRegistry
from recommender.settings import Settings
from recommender.simulate import confidence, simulated_users
from recommender.simulate.confidence import Estimate
from recommender.simulate.policies import REFERENCE, Policy, build, parse
from recommender.simulate.session import Outcome, Rules, SimUser, play

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The session metrics, in report order, with what each means; the first is the session
# reward every verdict uses.
METRICS = {
    "liked": "liked movies per session (held-out rating >= the like threshold)",
    "hit_rate": "share of served movies the user had watched (rated in the held-out data)",
    "mean_rating": "mean held-out rating of the consumed movies (users who consumed any)",
    "length": "movies served until the user dropped off",
}
LABELS = {"liked": "liked per session (reward)", "hit_rate": "hit rate",
          "mean_rating": "mean rating of consumed", "length": "session length"}
REWARD = "liked"
CI_METHOD = "95% percentile bootstrap over users, paired across policies"


@dataclass(frozen=True)
class Options:
    """What ``simulate ab`` can vary; see ``session.Rules`` for the user behaviour."""

    policies: tuple[str, ...] = ("model", "popularity", REFERENCE)
    rules: Rules = field(default_factory=Rules)
    max_users: int = 5000
    resamples: int = 2000
    seed: int = 42
    ratings_csv: Path | None = None

    def __post_init__(self) -> None:
        if self.max_users < 1 or self.resamples < 1:
            raise ValueError("max_users and resamples must be at least 1")


@dataclass(frozen=True)
class PolicyResult:
    name: str
    version: str  # the model version whose factors (or training counts) the policy used
    metrics: dict[str, Estimate]
    uplift: dict[str, Estimate]  # mean minus random's mean, paired interval
    relative_uplift: float | None  # reward mean / random's reward mean - 1
    beats_random: bool  # reward interval entirely above random's


@dataclass(frozen=True)
class AbReport:
    current_version: str
    users: int
    split: dict[str, object]
    rules: Rules
    top_n: int
    resamples: int
    reward: str
    ci_method: str
    policies: list[PolicyResult]
    metrics: dict[str, str] = field(default_factory=lambda: dict(METRICS))


def run(spark: SparkSession, settings: Settings, options: Options,
        tick: Callable[[], None] = lambda: None,
        on_users: Callable[[int, int], None] = lambda users, policies: None) -> AbReport:
    """The whole simulation. ``on_users(users, policies)`` is called once the users are known
    and ``tick`` after every simulated session (progress display)."""
    registry = ModelRegistry.from_settings(settings.model)
    kinds = parse(options.policies)
    current = registry.load()
    spec = simulated_users.SplitSpec.of(current.metadata)
    models = _models(registry, current, spec, kinds)
    ratings, movies = simulated_users.read_source(spark, settings, spec.source, options.ratings_csv)
    train, held_out = simulated_users.held_out_split(ratings, spec)
    users = simulated_users.collect_users(train, held_out, options.max_users, options.seed)
    if not users:
        raise ModelError(f"model {current.version}'s split leaves no held-out ratings to "
                         "simulate users from")
    catalogue = simulated_users.collect_catalogue(movies)
    policies = [build(kind, _name(kind, version), models[version or current.version], catalogue)
                for kind, version in kinds]
    on_users(len(users), len(policies))
    values = simulate(policies, users, options.rules, options.seed, tick)
    return AbReport(
        current_version=current.version, users=len(users),
        split={"method": spec.method, "test_fraction": spec.test_fraction, "seed": spec.seed},
        rules=options.rules, top_n=TOP_N, resamples=options.resamples, reward=REWARD,
        ci_method=CI_METHOD, policies=summarise(policies, values, options.resamples,
                                                options.seed))


def _models(registry: ModelRegistry, current: ModelArtifacts, spec: simulated_users.SplitSpec,
            kinds: list[tuple[str, str | None]]) -> dict[str, ModelArtifacts]:
    """CURRENT and every named version, refusing one whose held-out rows differ."""
    models = {current.version: current}
    for _, version in kinds:
        if version is None or version in models:
            continue
        artifacts = registry.load(version)
        if not simulated_users.SplitSpec.of(artifacts.metadata).same_held_out(spec):
            raise InvalidRequest(f"model {version} was trained on a different train/held-out "
                                 f"split than CURRENT {current.version}: one simulation cannot "
                                 "judge both honestly")
        models[version] = artifacts
    return models


def _name(kind: str, version: str | None) -> str:
    return kind if version is None else f"{kind}:{version}"


def simulate(policies: list[Policy], users: list[SimUser], rules: Rules, seed: int,
             tick: Callable[[], None] = lambda: None) -> np.ndarray:
    """Per-user session metrics, (policies, users, len(METRICS)), NaN where undefined."""
    out = np.empty((len(policies), len(users), len(METRICS)))
    for p, policy in enumerate(policies):
        for u, user in enumerate(users):
            rng = random.Random(f"{seed}:{user.user_id}")  # the same stream for every policy
            outcome = play(user, policy.rank(user, rng), rules, rng, policy.popular)
            out[p, u] = _row(outcome)
            tick()
    return out


def _row(outcome: Outcome) -> list[float]:
    mean_rating = outcome.mean_rating
    values = {"liked": float(outcome.liked), "hit_rate": outcome.hit_rate,
              "mean_rating": np.nan if mean_rating is None else mean_rating,
              "length": float(outcome.length)}
    return [values[m] for m in METRICS]


def summarise(policies: list[Policy], values: np.ndarray, resamples: int,
              seed: int) -> list[PolicyResult]:
    """Estimates and uplifts over the ``random`` policy from ``simulate``'s output."""
    ref = next(i for i, p in enumerate(policies) if p.name == REFERENCE)
    samples = [confidence.bootstrap_means(values[:, :, i], resamples, seed)
               for i in range(len(METRICS))]
    estimates = [{m: confidence.estimate(values[p, :, i], samples[i][p])
                  for i, m in enumerate(METRICS)} for p in range(len(policies))]
    base = estimates[ref][REWARD]
    return [PolicyResult(policy.name, policy.version, est,
                         {m: confidence.difference(values[p, :, i], values[ref, :, i],
                                                   samples[i][p], samples[i][ref])
                          for i, m in enumerate(METRICS)},
                         _relative(est[REWARD], base), p != ref and est[REWARD].above(base))
            for p, (policy, est) in enumerate(zip(policies, estimates, strict=True))]


def _relative(estimate: Estimate, base: Estimate) -> float | None:
    if estimate.mean is None or not base.mean:
        return None
    return estimate.mean / base.mean - 1
