"""The tiny model zoo: synthetic catalog corpus, training/build scripts and the shipped models.

Shipped models (safetensors only, built from config, never downloaded):

- ``models/zoo/catalog-copy/v1`` and ``v2``: tiny Llama causal LMs that turn a product-attribute
  prompt (see :func:`models.zoo.catalog_corpus.make_prompt`) into a one-sentence description.
- ``models/zoo/tiny-image/v1``: a tiny ``StableDiffusionPipeline`` (random weights, 64x64 images).
"""

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
CATALOG_COPY_DIR = ZOO_DIR / "catalog-copy"
TINY_IMAGE_DIR = ZOO_DIR / "tiny-image"

__all__ = ["CATALOG_COPY_DIR", "TINY_IMAGE_DIR", "ZOO_DIR"]
