"""The run's stages, in data-flow order, each one function an operator (or the inline runner) calls.

``prepare``, ``validate``, ``cost_check``, the hand-offs to Beam (``preprocess``) and to the
worker (``generate``), ``quality`` and ``publish``; ``sequence`` lists them once. Each stage takes
a run dir or a resolved run and returns a small JSON-able value. May import: ``genbatch.quality``,
``genbatch.plan``, ``genbatch.run``, ``genbatch.io``, ``genbatch.errors``; never Airflow at
module level, never ``models``, ``beam_jobs``, ``operators`` or ``dags``.
"""
