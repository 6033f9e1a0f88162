"""Planning figures of a run: its cost estimate and ceiling, and how many shards to cut.

``cost`` (estimates, ceilings, per-run and per-version cost figures) and ``autoscale``
(``num_shards: auto``). May import: ``genbatch.run``, ``genbatch.io``, ``genbatch.errors``.
"""
