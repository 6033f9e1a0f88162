"""Operating runs after (and around) the stages: retention, erasure, alerts and logs.

``retention`` (expire runs by policy), ``erasure`` (GDPR subject erasure across runs),
``alerts`` (failure webhooks, no Airflow import) and ``logs`` (structured logs with redaction).
May import: everything in ``genbatch`` below ``cli``.
"""
