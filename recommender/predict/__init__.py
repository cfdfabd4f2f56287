"""The real-time predictor (``job``), its scoring (``scoring``) and rollover (``rollover``)."""
