"""Per-item output quality metrics: plain functions of one output (text or image) and its item.

Nothing here reads storage or knows the run layout: :mod:`genbatch.stages.quality` feeds it records, and
a unit test (or a Beam DoFn, for a large run) can call the same functions on records it built.
Text: :func:`text_metrics`; images: :func:`image_metrics` and :func:`near_duplicates`.

What each metric measures: docs/internals.md#genbatchqualitymetrics
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

# --- text -------------------------------------------------------------------------------------


def schema_valid(text: str, schema: Mapping[str, Any]) -> bool:
    """Whether ``text`` is one JSON value that validates against ``schema`` (checked by ``jsonschema``, not by
    the decoder's own automaton, so the metric is an independent check of constrained decoding)."""
    import json

    import jsonschema

    try:
        jsonschema.validate(json.loads(text), dict(schema))
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


WORD_RE = re.compile(r"\w+", re.UNICODE)
REPEAT_MAX_SPAN = 8
"""Longest word span checked for back-to-back repeats ("made of red bag made of red bag ...")."""
CHAR_RUN_RE = re.compile(r"(\S)\1{9,}")
"""Ten or more of one non-space character in a row ("!!!!!!!!!!", "aaaaaaaaaaaa") is a loop too."""

EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4}(?![\w])"
)
PHONE_MIN_DIGITS, PHONE_MAX_DIGITS = 9, 15  # E.164 allows at most 15 digits
PII_KINDS: tuple[str, ...] = ("email", "phone", "card")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries (13-19 digits)."""
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, ch in enumerate(reversed(digits)):
        d = int(ch)
        if position % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS) -> dict[str, list[str]]:
    """PII matches by kind. Card numbers must pass Luhn; a card match is not also a phone."""
    wanted = set(kinds)
    found: dict[str, list[str]] = {k: [] for k in PII_KINDS if k in wanted}
    card_spans: list[tuple[int, int]] = []
    for m in CARD_RE.finditer(text):
        if luhn_ok(re.sub(r"\D", "", m.group())):
            card_spans.append(m.span())
            if "card" in found:
                found["card"].append(m.group())
    if "email" in found:
        found["email"] = [m.group() for m in EMAIL_RE.finditer(text)]
    if "phone" in found:
        for m in PHONE_RE.finditer(text):
            digits = sum(ch.isdigit() for ch in m.group())
            inside_card = any(a <= m.start() and m.end() <= b for a, b in card_spans)
            if PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS and not inside_card:
                found["phone"].append(m.group())
    return found


def _word_re(term: str) -> re.Pattern[str]:
    return _cached_word_re(term.lower())


@lru_cache(maxsize=4096)
def _cached_word_re(term: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(term)}(?!\w)")


def mentions_all(text: str, attributes: Mapping[str, Any]) -> bool:
    """True when every attribute value appears in the text as whole words (case-insensitive)."""
    lowered = text.lower()
    return all(
        _word_re(str(v)).search(lowered) is not None for v in attributes.values() if str(v).strip()
    )


def count_terms(text: str, terms: Iterable[str]) -> dict[str, int]:
    """Occurrences of each term (whole words or phrases, case-insensitive); only terms found."""
    lowered = text.lower()
    hits = {}
    for term in terms:
        if term.strip():
            n = len(_word_re(term.strip()).findall(lowered))
            if n:
                hits[term] = n
    return hits


def distinct_n(words: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams (1.0: no n-gram repeats); None when the text is too short."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def max_consecutive_repeats(words: Sequence[str], max_span: int = REPEAT_MAX_SPAN) -> int:
    """The most back-to-back copies of any span of 1..max_span words ("a b a b a b" -> 3)."""
    best = 1 if words else 0
    for span in range(1, max_span + 1):
        run = 0  # consecutive positions i with words[i] == words[i - span]
        for i in range(span, len(words)):
            if words[i] == words[i - span]:
                run += 1
                best = max(best, 1 + run // span)
            else:
                run = 0
    return best


@dataclass(frozen=True)
class TextChecks:
    """Run-wide settings of the text metrics (from the spec's ``quality`` section)."""

    blocklist: tuple[str, ...] = ()
    pii_kinds: tuple[str, ...] = PII_KINDS
    repetition_min_repeats: int = 3


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return []


def adherence_problems(text: str, metadata: Mapping[str, Any]) -> tuple[list[str] | None, bool | None]:
    """What the item asked for that the text lacks, and the attribute verdict on its own.

    Checks, when the item carries them: every ``attributes`` value (whole word), every
    ``expect_keywords`` entry (whole word or phrase, case-insensitive) and every ``expect_patterns``
    regex (``re.search``; add ``(?i)`` for case-insensitive). Returns ``(None, None)`` when the item
    asks for nothing, so it does not count towards adherence.
    """
    attributes = metadata.get("attributes")
    keywords = _str_list(metadata.get("expect_keywords"))
    patterns = _str_list(metadata.get("expect_patterns"))
    has_attributes = isinstance(attributes, Mapping) and any(str(v).strip() for v in attributes.values())
    if not (has_attributes or keywords or patterns):
        return None, None
    lowered = text.lower()
    missing: list[str] = []
    attributes_ok: bool | None = None
    if has_attributes:
        assert isinstance(attributes, Mapping)
        absent = [f"{k}={v}" for k, v in attributes.items()
                  if str(v).strip() and _word_re(str(v)).search(lowered) is None]
        attributes_ok = not absent
        missing += absent
    missing += [f"keyword {k!r}" for k in keywords if k.strip() and _word_re(k.strip()).search(lowered) is None]
    for pattern in patterns:
        try:
            if re.search(pattern, text) is None:
                missing.append(f"pattern {pattern!r}")
        except re.error as exc:
            missing.append(f"pattern {pattern!r} is not a valid regex ({exc})")
    return missing, attributes_ok


def text_metrics(
    text: str,
    *,
    new_tokens: int,
    max_new_tokens: int,
    metadata: Mapping[str, Any] | None = None,
    checks: TextChecks = TextChecks(),  # noqa: B008 - frozen, shared default is safe
) -> dict[str, Any]:
    """The per-item metrics of one text output (see docs/internals.md#genbatchqualitymetrics)."""
    words = [w.lower() for w in WORD_RE.findall(text)]
    repeats = max_consecutive_repeats(words)
    char_loop = CHAR_RUN_RE.search(text) is not None
    missing, attributes_ok = adherence_problems(text, metadata or {})
    blocked = count_terms(text, checks.blocklist)
    pii = find_pii(text, checks.pii_kinds)
    pii_found = {k: v for k, v in pii.items() if v}
    return {
        "empty": not text.strip(),
        "chars": len(text),
        "words": len(words),
        "new_tokens": int(new_tokens),
        "max_new_tokens": int(max_new_tokens),
        "truncated": int(new_tokens) >= int(max_new_tokens),
        "distinct_1": distinct_n(words, 1),
        "distinct_2": distinct_n(words, 2),
        "max_repeats": repeats,
        "repetition_loop": repeats >= checks.repetition_min_repeats or char_loop,
        "adherent": None if missing is None else not missing,
        "adherence_missing": "; ".join(missing) if missing else None,
        "mentions_attributes": attributes_ok,
        "blocklist_hits": sum(blocked.values()),
        "blocklist_terms": ", ".join(sorted(blocked)) or None,
        "pii_hits": sum(len(v) for v in pii_found.values()),
        "pii_kinds": ", ".join(sorted(pii_found)) or None,
    }


# --- images -----------------------------------------------------------------------------------

BLACK_MAX_BRIGHTNESS = 0.03
"""Mean luma (0..1) at or below which an image counts as black."""
UNIFORM_MAX_STD = 0.01
"""Largest per-channel standard deviation (0..1) of an image that counts as one flat colour."""
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)

#: Named colours for the adherence hook: the zoo's catalog colours, as sRGB.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 150, 50), "black": (10, 10, 10),
    "white": (245, 245, 245), "grey": (128, 128, 128), "navy": (20, 30, 110), "yellow": (245, 220, 40),
    "orange": (245, 140, 20), "purple": (120, 40, 150), "pink": (245, 160, 190), "brown": (120, 70, 30),
    "beige": (225, 210, 170), "teal": (20, 130, 130), "olive": (110, 110, 30),
}  # fmt: skip
COLOUR_ALIASES = {"gray": "grey", "violet": "purple", "cyan": "teal"}
_PALETTE_NAMES = list(PALETTE)
_PALETTE_RGB = np.array([PALETTE[n] for n in _PALETTE_NAMES], dtype=np.float64) / 255.0


def to_rgb_array(image: Any) -> np.ndarray:
    """An RGB float array in [0, 1] (HxWx3) from a PIL image or an array (uint8 or float)."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got an array of shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return arr.astype(np.float64)


def dhash(rgb: np.ndarray, size: int = 8) -> str:
    """64-bit difference hash (hex): brightness gradients of a 9x8 thumbnail, robust to small edits."""
    from PIL import Image

    luma = np.nan_to_num(rgb @ LUMA, nan=0.0)
    img = Image.fromarray((np.clip(luma, 0, 1) * 255).round().astype(np.uint8), mode="L")
    small = np.asarray(img.resize((size + 1, size), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:0{size * size // 4}x}"


def colour_in_prompt(prompt: str) -> str | None:
    """The first palette colour named in the prompt (whole word), e.g. 'red' in 'a red tote'."""
    for word in WORD_RE.findall(prompt.lower()):
        name = COLOUR_ALIASES.get(word, word)
        if name in PALETTE:
            return name
    return None


def dominant_colour(rgb: np.ndarray) -> str:
    """The palette colour nearest to the most pixels (each pixel votes for its nearest colour)."""
    pixels = np.nan_to_num(rgb.reshape(-1, 3), nan=0.0)
    if len(pixels) > 16384:  # a strided sample is plenty for a vote
        pixels = pixels[:: len(pixels) // 16384]
    distances = ((pixels[:, None, :] - _PALETTE_RGB[None, :, :]) ** 2).sum(axis=-1)
    votes = np.bincount(distances.argmin(axis=1), minlength=len(_PALETTE_NAMES))
    return _PALETTE_NAMES[int(votes.argmax())]


AdherenceHook = Callable[[np.ndarray, str], "bool | None"]
SafetyHook = Callable[[np.ndarray], bool]


def colour_adherence(rgb: np.ndarray, prompt: str) -> bool | None:
    """Default image adherence hook: the dominant colour is the colour the prompt names."""
    wanted = colour_in_prompt(prompt)
    return None if wanted is None else dominant_colour(rgb) == wanted


def image_metrics(
    image: Any,
    *,
    prompt: str,
    requested: tuple[int, int],
    adherence: AdherenceHook | None = colour_adherence,
    safety: SafetyHook | None = None,
) -> dict[str, Any]:
    """The per-item metrics of one image. ``requested`` is (height, width).

    ``adherence`` and ``safety`` are hooks: the first says whether the image shows what the prompt
    asked for (None: nothing to check), the second whether a classifier flags it as unsafe.
    """
    rgb = to_rgb_array(image)
    finite = bool(np.isfinite(rgb).all())
    clean = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0)
    luma = clean @ LUMA
    brightness = float(luma.mean()) if luma.size else 0.0
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    channel_std = float(clean.reshape(-1, 3).std(axis=0).max()) if luma.size else 0.0
    return {
        "height": height,
        "width": width,
        "size_ok": (height, width) == (int(requested[0]), int(requested[1])),
        "nan": not finite,
        "black": brightness <= BLACK_MAX_BRIGHTNESS,
        "uniform": channel_std <= UNIFORM_MAX_STD,
        "brightness": brightness,
        "contrast": float(luma.std()) if luma.size else 0.0,
        "dhash": dhash(clean),
        "dominant_colour": dominant_colour(clean),
        "prompt_colour": colour_in_prompt(prompt),
        "adherent": adherence(clean, prompt) if adherence is not None else None,
        "unsafe": safety(clean) if safety is not None else None,
    }


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex image hashes: the near-duplicate distance."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_duplicates(hashes: Mapping[str, str], max_distance: int = 4) -> dict[str, str]:
    """``{id: id of an earlier near-duplicate}`` for every image within ``max_distance`` bits.

    "Earlier" is id order, so of a group of copies the first stays and the others are flagged.
    Exact by the pigeonhole principle: two hashes at most ``max_distance`` bits apart agree on at
    least one of ``max_distance + 1`` bands, so only ids sharing a band are compared.
    """
    ids = sorted(hashes)
    if not ids:
        return {}
    bits = len(next(iter(hashes.values()))) * 4
    bands = max(1, min(max_distance + 1, bits))
    width = bits // bands
    buckets: dict[tuple[int, int], list[str]] = defaultdict(list)
    first_of: dict[str, str] = {}
    for ident in ids:
        value = int(hashes[ident], 16)
        candidates: dict[str, None] = {}
        keys = []
        for band in range(bands):
            shift = band * width
            mask_width = width if band < bands - 1 else bits - shift
            key = (band, (value >> shift) & ((1 << mask_width) - 1))
            keys.append(key)
            for other in buckets[key]:
                candidates.setdefault(other, None)
        close = [o for o in candidates if (value ^ int(hashes[o], 16)).bit_count() <= max_distance]
        if close:
            other = min(close)
            first_of[ident] = first_of.get(other, other)
        for key in keys:
            buckets[key].append(ident)
    return first_of


def exact_duplicates(values: Mapping[str, str]) -> dict[str, str]:
    """``{id: first id with the same value}`` for every later id whose value repeats exactly."""
    first: dict[str, str] = {}
    dupes: dict[str, str] = {}
    for ident in sorted(values):
        key = values[ident]
        if key in first:
            dupes[ident] = first[key]
        else:
            first[key] = ident
    return dupes


def counts_by(values: Iterable[str | None]) -> dict[str, int]:
    """How often each non-null value occurs, most common first."""
    return dict(Counter(v for v in values if v).most_common())
