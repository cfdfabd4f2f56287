"""The batch layer: train the ranking and rating models on the ratings, evaluate them, and
register the version through the gate (``recommender.model`` holds what a version is).

Modules, in the order a run uses them:

* ``run``       the entry point ``recommender train`` calls: read, train, profiles
* ``data``      ratings from Cassandra or a CSV as one DataFrame shape; window; splits
* ``als``       build / fit / tune Spark ML ALS: the implicit ranking model and the
  explicit rating model on the residuals of regularised biases
* ``evaluate``  RMSE, MAE, P/R/NDCG/MAP@k, coverage for the models and baselines (numpy)
* ``pipeline``  one training run end to end
* ``profiles``  per-user genre taste and nearest neighbours, written to Cassandra
* ``scheduler`` ``--every`` / ``--after`` retraining triggers
"""
