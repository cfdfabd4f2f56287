"""Getting data into the pipeline: MovieLens readers, the Kafka replayer, the metadata loader
and a synthetic rating generator with a planted truth.

* ``datasets`` finds a MovieLens release (local folder, user cache, or one download), checks it
  against known checksums and streams its ratings and tags as ``RatingEvent`` in time order.
* ``replay`` produces any stream of ``RatingEvent`` to Kafka, paced or at full speed, and can
  resume where an interrupted run stopped.
* ``metadata`` writes movies, links and tags to Cassandra and the ``movies`` index to
  Elasticsearch.
* ``synthetic`` invents MovieLens-shaped users, one at a time, for load tests at any scale and
  for checking that a trained model recovers a known taste.

Example::

    from data_loading.datasets import locate
    from data_loading.replay import replay
    from recommender.settings import get_settings

    settings = get_settings()
    ds = locate("ml-latest-small")
    result = replay(settings, ds.ratings(), settings.kafka.ratings_topic)
"""
