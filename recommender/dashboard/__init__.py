"""BI for the pipeline: the panel definitions (``panels``) behind three views of the same
data: the built-in dashboard served at ``/dashboard`` (``routes``), the Kibana saved objects
in ``kibana_dashboards/`` (``kibana_objects``, ``kibana``, checked by ``kibana_check``) and
the static ``recommender report`` (``report``)."""
