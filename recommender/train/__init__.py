"""The batch layer: train ALS on the ratings, evaluate it, and publish it through a gate.

Modules, in the order a run uses them:

* ``data``      ratings from Cassandra or a CSV as one DataFrame shape; window; splits
* ``als``       build / fit / tune Spark ML ALS (explicit and implicit)
* ``evaluate``  RMSE, MAE, P/R/NDCG/MAP@k, coverage for the model and baselines (numpy)
* ``artifacts`` a version's portable files: factors as ``.npy``, ``metadata.json``
* ``registry``  versions on disk, ``CURRENT``, the quality gate, promote / rollback / prune
* ``pipeline``  one training run end to end (the entry point ``recommender train`` calls)
* ``foldin``    serving math in numpy: fold-in for new users, top-k, pair prediction
* ``profiles``  per-user genre taste and nearest neighbours, written to Cassandra
* ``scheduler`` ``--every`` / ``--after`` retraining triggers

Serving code (predictor, HTTP API) needs only ``artifacts``, ``foldin`` and ``registry``,
none of which imports Spark::

    from recommender.train import ModelRegistry, fold_in, recommend
    art = ModelRegistry(models_dir).load()          # CURRENT
    recommend(art, fold_in(art, {1: 5.0, 50: 4.0}), k=10, exclude={1, 50})
"""

from recommender.train.artifacts import ModelArtifacts
from recommender.train.foldin import (
    Recommendations,
    fold_in,
    predict_pair,
    recommend,
    recommend_for_user,
    recommend_popular,
    similar_items,
)
from recommender.train.registry import GateDecision, ModelRegistry

__all__ = [
    "GateDecision",
    "ModelArtifacts",
    "ModelRegistry",
    "Recommendations",
    "fold_in",
    "predict_pair",
    "recommend",
    "recommend_for_user",
    "recommend_popular",
    "similar_items",
]
