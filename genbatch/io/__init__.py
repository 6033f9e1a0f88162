"""Storage and input files: the bytes layer every other part of the core stands on.

``storage`` reads and writes objects by URI with create-only, checksummed writes, handing each call to
the backend for its URI (``backend``: the interface; ``local`` and ``gcs``: the two backends; ``uris``:
addressing and confinement); ``input_rows`` turns an input file (JSONL, CSV, Parquet) into raw rows.
May import: ``genbatch.errors`` and third-party libraries only.
"""
