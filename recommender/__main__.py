"""``python -m recommender`` is the ``recommender`` command."""

from recommender.cli import main

main()
