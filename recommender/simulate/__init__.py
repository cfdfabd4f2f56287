"""Offline A/B simulation: would users get more out of the session feed with the model than
with popularity or random picks?

The protocol, and why it is honest:

* **Judged on what the model never saw.** The model is the registry's CURRENT version as it
  serves, not a model trained here. ``recommender train`` fitted it on the training side of
  a seeded hash split of (user, movie) and recorded the split in its ``metadata.json``; the
  simulation reads the same ratings source and re-cuts it with that split, which puts every
  row on the side it was on at training time (``simulate.data``). A user's training ratings
  are what the system knows about them (never served, fold-in input); their held-out ratings
  are their responses. Popularity counts come from the model's training side too.
* **Served as the API serves.** Each policy only supplies a session's top list; the next
  movie is chosen by ``recommender.feed``, the code behind ``/sessions/{id}/next`` (random
  pick from the top 30, no repeats, genre then global popularity fallback).
* **Responses only from real ratings.** A served movie the user rated in the held-out data is
  consumed with that rating; any other movie is skipped. The user leaves after a configured
  number of unliked movies in a row (``simulate.session``).
* **Uncertainty stated.** Means over users with 95 % percentile-bootstrap intervals, paired
  across policies (``simulate.confidence``).

Entry point: ``simulate.ab.run``; the command is ``recommender simulate ab``.
"""
