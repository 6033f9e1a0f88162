"""``python -m models.optimize {int8,prune,distill} PARENT OUT [...]``: build one variant, print its card."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from models.optimize import distill, prune, quantize_int8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.optimize", description=__doc__)
    sub = parser.add_subparsers(dest="recipe", required=True)
    for name in ("int8", "prune", "distill"):
        p = sub.add_parser(name)
        p.add_argument("parent", type=Path)
        p.add_argument("out", type=Path)
        p.add_argument("--eval-rows", type=int, default=200)
        if name == "int8":
            p.add_argument("--backend", choices=["auto", "torch.ao", "torchao"], default="auto")
        if name == "prune":
            p.add_argument("--sparsity", type=float, required=True)
            p.add_argument("--unstructured", action="store_true")
        if name == "distill":
            p.add_argument("--steps", type=int, default=600)
            p.add_argument("--hidden-size", type=int, default=64)
            p.add_argument("--layers", type=int, default=2)
            p.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.recipe == "int8":
        card = quantize_int8(args.parent, args.out, backend=args.backend, eval_rows=args.eval_rows)
    elif args.recipe == "prune":
        card = prune(args.parent, args.out, args.sparsity, structured=not args.unstructured, eval_rows=args.eval_rows)
    else:
        card = distill(args.parent, args.out, steps=args.steps, hidden_size=args.hidden_size, layers=args.layers,
                       seed=args.seed, eval_rows=args.eval_rows)
    print(json.dumps(card, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
