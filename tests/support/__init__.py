"""Helpers shared by the integration, fault-injection and fuzz suites: private names, topic
readers, job processes, server faults and load generators with ledgers, all against the
real stack. ``fixtures`` is registered as a pytest plugin by ``tests/conftest.py``, so every
suite shares one stack, one SparkSession and one trained model per session."""
