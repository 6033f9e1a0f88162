"""What a run is: its spec, its resolved state, where its objects live, and its records.

``spec`` (RunSpec), ``state`` (the resolved run, spec.json), ``layout`` (RunLayout: every path and
name pattern of a run dir), ``records`` (JSONL encoding and part listings), ``gates`` (the gate
grammar), ``attempts`` (reading worker attempt records), ``fanout``, ``outputs`` (the consumer
reader) and ``reconcile`` (nothing lost, nothing doubled). May import: ``genbatch.io``,
``genbatch.errors``.
"""
