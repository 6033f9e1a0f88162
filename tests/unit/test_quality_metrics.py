"""Per-item quality metrics: each injected bad output is caught by the metric meant for it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from genbatch.quality.metrics import (
    TextChecks,
    colour_in_prompt,
    dhash,
    distinct_n,
    dominant_colour,
    exact_duplicates,
    find_pii,
    hamming,
    image_metrics,
    luhn_ok,
    max_consecutive_repeats,
    near_duplicates,
    text_metrics,
    to_rgb_array,
)

GOOD = "A red backpack made of leather, vintage and made to last."
ATTRS = {"attributes": {"colour": "red", "material": "leather", "item": "backpack"}}


def _text(text: str, *, new_tokens: int = 15, limit: int = 40, metadata: dict | None = None,
          checks: TextChecks = TextChecks()) -> dict:  # noqa: B008
    return text_metrics(text, new_tokens=new_tokens, max_new_tokens=limit,
                        metadata=ATTRS if metadata is None else metadata, checks=checks)


def test_a_good_catalog_output_raises_no_flag() -> None:
    m = _text(GOOD)
    assert not m["empty"] and not m["truncated"] and not m["repetition_loop"]
    assert m["adherent"] is True and m["mentions_attributes"] is True and m["adherence_missing"] is None
    assert m["pii_hits"] == 0 and m["blocklist_hits"] == 0
    assert m["distinct_2"] == 1.0 and m["words"] == 11


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_and_whitespace_outputs_are_empty(text: str) -> None:
    m = _text(text, new_tokens=1)
    assert m["empty"] is True
    assert m["adherent"] is False  # nothing asked for is there either


@pytest.mark.parametrize("text", [
    "A red bag made of red bag made of red bag made of red bag made of",
    "leather leather leather leather",
    "A red backpack made of leather!!!!!!!!!!!!!!!!",
    "the the the",
])
def test_repetition_loops_are_caught(text: str) -> None:
    m = _text(text)
    assert m["repetition_loop"] is True, m


def test_repetition_measures() -> None:
    words = "a b a b a b c".split()
    assert max_consecutive_repeats(words) == 3
    assert max_consecutive_repeats("a b c d".split()) == 1
    assert max_consecutive_repeats([]) == 0
    assert distinct_n("a b a b".split(), 2) == pytest.approx(2 / 3)
    assert distinct_n(["a"], 2) is None
    assert _text("very very good", checks=TextChecks(repetition_min_repeats=3))["repetition_loop"] is False


def test_truncation_respects_the_per_item_limit() -> None:
    assert _text(GOOD, new_tokens=40, limit=40)["truncated"] is True
    assert _text(GOOD, new_tokens=39, limit=40)["truncated"] is False
    assert _text(GOOD, new_tokens=8, limit=8)["truncated"] is True  # an item's params.max_new_tokens=8


def test_adherence_reports_what_is_missing() -> None:
    m = _text("A blue backpack made of leather.")
    assert m["adherent"] is False and m["mentions_attributes"] is False
    assert m["adherence_missing"] == "colour=red"
    # whole words only
    assert _text("A reddish leathery backpack.")["adherent"] is False


def test_adherence_with_keywords_and_patterns() -> None:
    meta = {"expect_keywords": ["waterproof", "two pockets"], "expect_patterns": [r"(?i)\bsku-\d{4}\b"]}
    ok = _text("Waterproof, with two pockets. SKU-1234", metadata=meta)
    assert ok["adherent"] is True and ok["mentions_attributes"] is None
    bad = _text("Waterproof and roomy.", metadata=meta)
    assert bad["adherent"] is False
    assert "keyword 'two pockets'" in bad["adherence_missing"] and "pattern" in bad["adherence_missing"]
    broken = _text("anything", metadata={"expect_patterns": ["(unclosed"]})
    assert broken["adherent"] is False and "not a valid regex" in broken["adherence_missing"]
    assert _text("anything", metadata={})["adherent"] is None  # nothing to check: not counted


def test_blocklist_hits_are_whole_words_any_case() -> None:
    checks = TextChecks(blocklist=("cheap", "knock-off"))
    m = _text("A CHEAP knock-off, cheap!", checks=checks)
    assert m["blocklist_hits"] == 3 and m["blocklist_terms"] == "cheap, knock-off"
    assert _text("Cheapest in town", checks=checks)["blocklist_hits"] == 0


def test_an_email_address_is_pii() -> None:
    m = _text("Write to jane.doe+shop@example.co.uk for details.")
    assert m["pii_hits"] == 1 and m["pii_kinds"] == "email"


def test_phone_numbers_and_luhn_valid_cards_are_pii() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    found = find_pii("Call +44 20 7946 0958 or (555) 123-4567; card 4111 1111 1111 1111.")
    assert len(found["phone"]) == 2, found
    assert found["card"] == ["4111 1111 1111 1111"]
    # a Luhn-invalid 16-digit number is neither a card nor (too many digits) a phone
    assert find_pii("order 4111 1111 1111 1112") == {"email": [], "phone": [], "card": []}
    # dates, prices and short numbers are not phones
    assert find_pii("made 2026-11-26, costs 1234.50, pack of 12")["phone"] == []
    only_email = find_pii("a@b.io 4111111111111111", kinds=["email"])
    assert only_email == {"email": ["a@b.io"]}


def test_exact_duplicates_keep_the_first_id() -> None:
    assert exact_duplicates({"b": "x", "a": "x", "c": "y"}) == {"b": "a"}


# --- images -----------------------------------------------------------------------------------


def _noise(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size, 3))


def _png(arr: np.ndarray) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


def test_a_black_image_is_black_and_uniform() -> None:
    m = image_metrics(_png(np.zeros((64, 64, 3))), prompt="a red bag", requested=(64, 64))
    assert m["black"] is True and m["uniform"] is True and m["brightness"] == 0.0 and m["contrast"] == 0.0
    noise = image_metrics(_png(_noise(0)), prompt="a red bag", requested=(64, 64))
    assert noise["black"] is False and noise["uniform"] is False and noise["contrast"] > 0.1


def test_a_flat_grey_image_is_uniform_not_black() -> None:
    m = image_metrics(np.full((64, 64, 3), 0.5), prompt="x", requested=(64, 64))
    assert m["uniform"] is True and m["black"] is False


def test_nan_pixels_and_wrong_size_are_flagged() -> None:
    arr = _noise(1)
    arr[3, 4, 0] = np.nan
    m = image_metrics(arr, prompt="x", requested=(64, 64))
    assert m["nan"] is True
    small = image_metrics(_noise(2, size=32), prompt="x", requested=(64, 64))
    assert small["size_ok"] is False and (small["height"], small["width"]) == (32, 32)


def test_duplicate_images_are_near_duplicates() -> None:
    base = _noise(3)
    tweaked = base.copy()
    tweaked[0, 0] = 1.0 - tweaked[0, 0]  # one pixel changed
    hashes = {
        "img-a": dhash(to_rgb_array(_png(base))),
        "img-b": dhash(to_rgb_array(_png(base))),  # exact copy
        "img-c": dhash(to_rgb_array(_png(tweaked))),  # near copy
        "img-d": dhash(to_rgb_array(_png(_noise(4)))),  # different
        "img-e": dhash(to_rgb_array(_png(_noise(5)))),
    }
    assert hamming(hashes["img-a"], hashes["img-c"]) <= 4
    assert hamming(hashes["img-a"], hashes["img-d"]) > 10
    assert near_duplicates(hashes, max_distance=4) == {"img-b": "img-a", "img-c": "img-a"}
    assert near_duplicates(hashes, max_distance=0) == {"img-b": "img-a"} | (
        {"img-c": "img-a"} if hashes["img-c"] == hashes["img-a"] else {}
    )
    assert near_duplicates({}) == {}


def test_near_duplicates_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    base = [int(rng.integers(0, 2**63)) for _ in range(40)]
    hashes = {}
    for i in range(200):  # clusters of close hashes around 40 centres
        flips = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
        value = base[i % 40]
        for bit in flips:
            value ^= 1 << int(bit)
        hashes[f"id-{i:03d}"] = f"{value:016x}"
    got = near_duplicates(hashes, max_distance=4)
    ids = sorted(hashes)
    for j, ident in enumerate(ids):
        earlier = [o for o in ids[:j] if hamming(hashes[o], hashes[ident]) <= 4]
        assert (ident in got) == bool(earlier), ident


def test_dominant_colour_against_the_prompt_colour() -> None:
    red = np.zeros((64, 64, 3))
    red[..., 0] = 0.85
    red[:8] = 0.9  # a light band does not change the vote
    assert dominant_colour(red) == "red"
    assert colour_in_prompt("A Gray wool hat") == "grey"
    assert colour_in_prompt("a wool hat") is None
    assert image_metrics(red, prompt="a red tote", requested=(64, 64))["adherent"] is True
    assert image_metrics(red, prompt="a blue tote", requested=(64, 64))["adherent"] is False
    assert image_metrics(red, prompt="a tote", requested=(64, 64))["adherent"] is None
    hooked = image_metrics(red, prompt="a tote", requested=(64, 64), safety=lambda rgb: True)
    assert hooked["unsafe"] is True
