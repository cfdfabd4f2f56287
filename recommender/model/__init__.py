"""What a trained model is and how it is served: every stage's shared room.

* ``artifacts`` a version's portable files: the ranking and rating factors as ``.npy``,
  ``metadata.json``
* ``foldin``    serving math in numpy: fold-in, top-k by the ranking model, ratings by the
  rating model, similar movies
* ``registry``  versions on disk, ``CURRENT``, the quality gate, promote / rollback / prune,
  and the ``on_promoted`` hooks that run after every promotion

The batch layer (``recommender.train``) writes versions through the registry; the predictor,
the API, the simulation and the statistics only read them, and never import ``train``::

    from recommender.model import ModelRegistry, fold_in, recommend
    artifacts = ModelRegistry(models_dir).load()          # CURRENT
    recommend(artifacts, fold_in(artifacts, {1: 5.0, 50: 4.0}), k=10, exclude={1, 50})
"""

from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import (
    Recommendations,
    fold_in,
    predict_pair,
    recommend,
    recommend_for_user,
    recommend_popular,
    similar_items,
)
from recommender.model.registry import GateDecision, ModelRegistry

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
