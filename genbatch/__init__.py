"""genbatch: orchestrated batch generation with generative models.

The core package every stage shares. It must never import Airflow at module level.
"""

__version__ = "0.1.0"
