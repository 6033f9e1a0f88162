"""Deterministic synthetic product-attribute corpus for the tiny catalog-copy model.

A product is three attributes — ``colour``, ``material`` and ``item`` — drawn from small fixed
vocabularies. The model is given :func:`make_prompt` and learns to write a one-sentence description
that mentions all three (:func:`mentions_all` is the quality check). Descriptions come from several
templates with free "style"/"use" words, so the model has to copy the attributes rather than memorise
one sentence.

The attribute space (15 x 12 x 20 = 3600 combinations) is split once, deterministically:
:func:`heldout_combinations` (500, used by ``examples/catalog/items.jsonl``) never appear in the
training corpus, while every single attribute value does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from genbatch.quality.metrics import mentions_all as mentions_every_value

ATTRIBUTE_KEYS: tuple[str, ...] = ("colour", "material", "item")

COLOURS: tuple[str, ...] = (
    "red", "blue", "green", "black", "white", "grey", "navy", "yellow",
    "orange", "purple", "pink", "brown", "beige", "teal", "olive",
)  # fmt: skip
MATERIALS: tuple[str, ...] = (
    "leather", "cotton", "wool", "linen", "silk", "denim",
    "canvas", "bamboo", "ceramic", "glass", "steel", "oak",
)  # fmt: skip
#: item -> category (the category is a passthrough column in the example data)
ITEM_CATEGORIES: dict[str, str] = {
    "backpack": "bags", "wallet": "bags", "tote": "bags", "satchel": "bags",
    "jacket": "apparel", "scarf": "apparel", "hat": "apparel",
    "belt": "accessories", "watch": "accessories",
    "lamp": "home", "vase": "home", "pillow": "home", "blanket": "home",
    "chair": "furniture", "table": "furniture", "shelf": "furniture",
    "mug": "kitchen", "bowl": "kitchen", "bottle": "kitchen", "teapot": "kitchen",
}  # fmt: skip
ITEMS: tuple[str, ...] = tuple(ITEM_CATEGORIES)

VALUES: dict[str, tuple[str, ...]] = {"colour": COLOURS, "material": MATERIALS, "item": ITEMS}

STYLES: tuple[str, ...] = (
    "classic", "minimal", "vintage", "modern", "rustic", "sleek", "bold", "elegant",
)  # fmt: skip
USES: tuple[str, ...] = (
    "built for everyday use",
    "perfect for travel",
    "ideal as a gift",
    "made to last",
    "easy to care for",
    "great for weekends",
)

#: description templates; every one names {colour}, {material} and {item} exactly once
TEMPLATES: tuple[str, ...] = (
    "A {colour} {item} made of {material}, {style} and {use}.",
    "This {style} {item} is crafted from {material} in a {colour} finish.",
    "Made from {material}, this {colour} {item} is {use}.",
    "Our {colour} {material} {item} is {style} and {use}.",
    "The {item} comes in {colour} {material} with a {style} look.",
    "A {style} {material} {item} in {colour}, {use}.",
    "Crafted in {material}, the {item} in {colour} is {style}.",
    "Meet the {colour} {item}: {material}, {style}, {use}.",
)

SPLIT_SEED = 20240601
N_HELDOUT = 500


def make_prompt(attributes: dict[str, str]) -> str:
    """The exact prompt the model is given, e.g. ``colour: red | material: oak | item: lamp\\ndescription:``."""
    missing = [k for k in ATTRIBUTE_KEYS if not attributes.get(k)]
    if missing:
        raise ValueError(f"attributes {attributes!r} lack {missing}; need {list(ATTRIBUTE_KEYS)}")
    fields = " | ".join(f"{k}: {attributes[k].strip().lower()}" for k in ATTRIBUTE_KEYS)
    return f"{fields}\ndescription:"


def sample_attributes(rng: random.Random) -> dict[str, str]:
    """One product drawn uniformly from the whole attribute space."""
    return {k: rng.choice(VALUES[k]) for k in ATTRIBUTE_KEYS}


def describe(attributes: dict[str, str], rng: random.Random) -> str:
    """A target description (no leading space, no prompt) mentioning all three attributes."""
    template = rng.choice(TEMPLATES)
    return template.format(
        colour=attributes["colour"],
        material=attributes["material"],
        item=attributes["item"],
        style=rng.choice(STYLES),
        use=rng.choice(USES),
    )


def mentions(text: str, value: str) -> bool:
    """Whether ``value`` occurs in ``text`` as a whole word, case-insensitively (the quality metric's rule)."""
    return bool(value.strip()) and mentions_every_value(text, {"value": value.strip()})


def mentions_all(text: str, attributes: dict[str, str]) -> bool:
    """Whether ``text`` mentions the colour, the material and the item of ``attributes``."""
    return all(mentions(text, attributes[k]) for k in ATTRIBUTE_KEYS)


def all_combinations() -> list[tuple[str, str, str]]:
    """Every (colour, material, item), in a fixed order."""
    return [(c, m, i) for c in COLOURS for m in MATERIALS for i in ITEMS]


def _split() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    combos = all_combinations()
    random.Random(SPLIT_SEED).shuffle(combos)
    return combos[N_HELDOUT:], combos[:N_HELDOUT]


def heldout_combinations() -> list[tuple[str, str, str]]:
    """The 500 combinations kept out of training (the example catalog), in a fixed order."""
    return _split()[1]


def training_combinations() -> list[tuple[str, str, str]]:
    """The combinations the training corpus is drawn from (all others)."""
    return _split()[0]


def as_attributes(combo: tuple[str, str, str]) -> dict[str, str]:
    return dict(zip(ATTRIBUTE_KEYS, combo, strict=True))


def training_pairs(n: int, seed: int) -> Iterator[tuple[str, str]]:
    """``n`` deterministic (prompt, description) pairs from the training combinations."""
    rng = random.Random(seed)
    combos = training_combinations()
    for _ in range(n):
        attrs = as_attributes(rng.choice(combos))
        yield make_prompt(attrs), describe(attrs, rng)
