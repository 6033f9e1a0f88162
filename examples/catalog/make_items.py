"""Write ``examples/catalog/items.jsonl``: 500 deterministic product rows for the catalog-copy model.

Each row is ``{"id", "prompt", "attributes", "category"}``. The attribute combinations are the
held-out split of :mod:`models.zoo.catalog_corpus` — none of them is in the model's training corpus,
though every single colour, material and item is — so generating for these rows shows the model
generalises rather than recalls.

Run from the repository root: ``python examples/catalog/make_items.py`` (or ``-m examples.catalog.make_items``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from models.zoo.catalog_corpus import (  # noqa: E402
    ITEM_CATEGORIES,
    as_attributes,
    heldout_combinations,
    make_prompt,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "items.jsonl"


def make_rows() -> list[dict[str, object]]:
    """The 500 example rows, in a fixed order."""
    rows: list[dict[str, object]] = []
    for n, combo in enumerate(heldout_combinations(), start=1):
        attrs = as_attributes(combo)
        rows.append(
            {
                "id": f"sku-{n:05d}",
                "prompt": make_prompt(attrs),
                "attributes": attrs,
                "category": ITEM_CATEGORIES[attrs["item"]],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rows = make_rows()
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
