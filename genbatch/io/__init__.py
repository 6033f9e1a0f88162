"""Storage and input files: the bytes layer every other part of the core stands on.

``storage`` reads and writes objects by URI (a local path or ``gs://``) with create-only,
checksummed writes; ``input_rows`` turns an input file (JSONL, CSV, Parquet) into raw rows.
May import: ``genbatch.errors`` and third-party libraries only.
"""
