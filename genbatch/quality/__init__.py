"""Checks on data, inputs and outputs alike: Great Expectations suites, metrics, gates, the report.

``expectations`` (the GX input suite and Data Docs), ``metrics`` (per-item output metrics),
``gates`` (gates evaluated as a GX suite), ``canary`` (the A/B verdict of a canary share),
``stats`` (bootstrap intervals) and ``report`` (report.html). May import: ``genbatch.plan``,
``genbatch.run``, ``genbatch.io``, ``genbatch.errors``.
"""
