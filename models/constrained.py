"""Constrained decoding for ``generation.response_schema``: a token-level mask from the schema's automaton.

For each row the mask keeps the tokens whose text the automaton (:mod:`genbatch.run.response_schema`) accepts
next and after which the JSON can still be closed within the row's remaining tokens (every character the
schema writes is one token of the vocabulary, checked at load); EOS only once the JSON is complete. So every
output parses and validates, greedy or sampled. The allowed tokens of a state are computed once and cached:
rows at the same place of the schema share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genbatch.errors import SpecError
from genbatch.run.response_schema import ResponseSchema, State, compile_schema

CACHE_STATES = 200_000


class SchemaConstraint:
    """The schema, the vocabulary's token texts, and the allowed-token cache of one runner."""

    def __init__(self, schema: dict[str, Any], tokenizer: Any, eos_ids: Sequence[int], vocab_size: int) -> None:
        import torch

        self.torch = torch
        self.schema: ResponseSchema = compile_schema(schema)
        self.eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long)
        self.vocab_size = vocab_size
        special = set(tokenizer.all_special_ids)
        self.by_first: dict[str, list[tuple[int, str]]] = {}
        self.token_text: dict[int, str] = {}  # every token the automaton can take, and its text
        singles: set[str] = set()
        for tid in range(min(len(tokenizer), vocab_size)):
            if tid in special:
                continue
            text = tokenizer.decode([tid], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if not text or "\ufffd" in text:
                continue  # a partial UTF-8 sequence on its own: never one the automaton can take
            self.by_first.setdefault(text[0], []).append((tid, text))
            self.token_text[tid] = text
            if len(text) == 1:
                singles.add(text)
        missing = sorted(self.schema.literal_chars() - singles)
        if missing:
            raise SpecError(f"generation.response_schema needs characters this model's tokenizer has no single token "
                            f"for: {''.join(missing)!r}; constrained decoding could not be sure to close the JSON: "
                            "use keys and enum values this model can write one character at a time (ASCII)")
        self._cache: dict[State, tuple[Any, Any, bool]] = {}

    def allowed(self, state: State) -> tuple[Any, Any, bool]:
        """(token ids the automaton takes next, the fewest characters to close after each, complete now)."""
        hit = self._cache.get(state)
        if hit is not None:
            return hit
        schema = self.schema
        ids: list[int] = []
        close: list[int] = []
        for first, tokens in self.by_first.items():
            after_first = schema.step(state, first)
            if after_first is None:
                continue
            for tid, text in tokens:
                after = schema.feed(after_first, text[1:]) if len(text) > 1 else after_first
                if after is not None:
                    ids.append(tid)
                    close.append(schema.min_close(after))
        torch = self.torch
        result = (torch.tensor(ids, dtype=torch.long), torch.tensor(close, dtype=torch.long), schema.complete(state))
        if len(self._cache) >= CACHE_STATES:
            self._cache.clear()
        self._cache[state] = result
        return result

    def rows(self, n: int, max_new: int) -> RowStates:
        """Per-row decoding state for a batch of ``n`` rows that may each write ``max_new`` tokens."""
        return RowStates(self, n, max_new)


class RowStates:
    """Each row's automaton state and tokens written; reordered as the decoding loop reorders its rows."""

    def __init__(self, constraint: SchemaConstraint, n: int, max_new: int) -> None:
        self.c = constraint
        self.states: list[State | None] = [constraint.schema.start] * n
        self.written = [0] * n
        self.max_new = max_new

    def keep(self, rows: Sequence[int]) -> None:
        """Reorder/subset the rows (the loop sorts rows by length and drops finished ones)."""
        self.states = [self.states[r] for r in rows]
        self.written = [self.written[r] for r in rows]

    def mask(self, scores: Any, rows: slice) -> Any:
        """``scores`` of ``rows`` with every token the schema or the budget forbids at -inf."""
        torch = self.c.torch
        out = torch.full_like(scores, float("-inf"))
        for i, r in enumerate(range(*rows.indices(len(self.states)))):
            state = self.states[r]
            keep = self.c.eos
            if state is not None:
                ids, close, complete = self.c.allowed(state)
                left = self.max_new - self.written[r] - 1  # tokens after this one
                fits = ids[close <= left]
                if complete:
                    fits = torch.cat([fits, self.c.eos])
                keep = fits if len(fits) else self.c.eos  # no way on (a budget below the schema's minimum): stop
            keep = keep.to(scores.device)
            out[i, keep] = scores[i, keep]
        return out

    def advance(self, tokens: Any, rows: slice) -> None:
        """Feed each row's chosen token to its automaton."""
        for i, r in enumerate(range(*rows.indices(len(self.states)))):
            self.written[r] += 1
            state = self.states[r]
            text = self.c.token_text.get(int(tokens[i]))
            self.states[r] = None if state is None or text is None else self.c.schema.feed(state, text)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """As a ``generate`` logits processor: advance on the token chosen last step, then mask."""
        if getattr(self, "_started", False):
            self.advance(input_ids[:, -1], slice(0, len(self.states)))
        self._started = True
        return self.mask(scores, slice(0, len(self.states)))
