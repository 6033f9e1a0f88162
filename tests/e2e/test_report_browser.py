"""report.html in a real browser: headless Chromium opens the report of a real run, takes a
screenshot (kept under tests/e2e/artifacts/ as a CI artefact) and checks that every chart image
decoded, the tables rendered, and the page logged no console errors and requested nothing.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and PyPI ``playwright``; the browser is
never downloaded (no ``playwright install``). Missing either is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("GENBATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--headless"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get update && apt-get install -y "
                    "chromium` (make setup does), or point GENBATCH_CHROMIUM at a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -c constraints.txt playwright "
                    "(never `playwright install`: the Debian chromium is used)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report-e2e")


def _real_run(workdir: Path, spec: dict[str, Any], run_id: str) -> Path:
    spec = {**spec, "output": {"uri": str(workdir / "runs")}}
    spec_path = workdir / f"{run_id}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "genbatch", "run", str(spec_path), "--run-id", run_id],
                          cwd=workdir, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = workdir / "runs" / run_id / "report.html"
    assert report.exists(), report
    return report


def _text_spec(workdir: Path) -> dict[str, Any]:
    rows = (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:60]
    path = workdir / "items.jsonl"
    path.write_text("\n".join(rows) + "\n" + json.dumps({"id": "bad/id", "prompt": "x"}) + "\n")
    return {"task": "text", "input": {"uri": str(path)},
            "model": {"name": "catalog-copy", "alias": "production", "registry": ".genbatch/registry"},
            "sharding": {"num_shards": 2},
            "quality": {"gates": ["adherence >= 0.9", "empty_rate <= 0.01", "pii_hits == 0"]}}


def _image_spec(workdir: Path) -> dict[str, Any]:
    path = workdir / "images.jsonl"
    path.write_text("".join(json.dumps({"id": f"img-{i}", "prompt": f"a {c} leather tote"}) + "\n"
                            for i, c in enumerate(["red", "blue", "green", "yellow", "white", "navy"])))
    return {"task": "image", "input": {"uri": str(path)},
            "model": {"name": "tiny-image", "alias": "production", "registry": ".genbatch/registry"},
            "generation": {"num_inference_steps": 4}, "sharding": {"num_shards": 2},
            "quality": {"gates": ["black_rate == 0", "near_duplicates == 0"]}}


def _open(browser: Any, report: Path, name: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(report.as_uri(), wait_until="load")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    return page, problems


def _images_decoded(page: Any, selector: str) -> list[int]:
    return list(page.eval_on_selector_all(selector, "els => els.map(e => e.complete ? e.naturalWidth : 0)"))


def test_text_report_renders_charts_and_tables(browser: Any, workdir: Path) -> None:
    page, problems = _open(browser, _real_run(workdir, _text_spec(workdir), "e2e-text"), "report-text")
    assert page.title() == "genbatch run e2e-text"
    assert "PASSED" in page.inner_text(".verdict")
    widths = _images_decoded(page, "img.chart")
    assert len(widths) >= 5 and all(w > 100 for w in widths), widths  # every chart PNG decoded
    gate_rows = page.locator("table.gates tbody tr")
    assert gate_rows.count() >= 7
    assert "adherence >= 0.9" in page.inner_text("table.gates")
    assert page.locator("table.samples tbody tr").count() >= 10
    assert "id_unsafe" in page.inner_text("table.rejects")
    assert page.locator("table.timings tbody tr").count() == 2
    model = page.inner_text("table.model")
    assert "catalog-copy" in model and "lineage" in model
    assert page.eval_on_selector("table.gates", "t => t.getBoundingClientRect().height") > 100
    assert problems == []


def test_image_report_shows_a_contact_sheet(browser: Any, workdir: Path) -> None:
    page, problems = _open(browser, _real_run(workdir, _image_spec(workdir), "e2e-image"), "report-image")
    sheet = _images_decoded(page, ".sheet img")
    assert len(sheet) == 6 and all(w == 64 for w in sheet), sheet
    assert all(w > 100 for w in _images_decoded(page, "img.chart"))
    assert page.locator("table.gates tbody tr").count() >= 6
    assert problems == []
