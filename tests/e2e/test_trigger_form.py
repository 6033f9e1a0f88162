"""The Airflow UI's trigger form, driven by headless Chromium against the real local stack.

An operator logs in (FAB login page), opens batch_generation's trigger form (the Params generated
from the RunSpec JSON schema: the spec's descriptions, only its required fields marked required),
sets the input, the number of shards, the output and the run id, triggers, and sees the run
succeed on the run page. Screenshots go to tests/e2e/artifacts/.

Needs Debian's ``chromium`` and PyPI ``playwright`` (never ``playwright install``); missing either
is a failure, not a skip. The section fields are Monaco JSON editors that re-format valid JSON on
every keystroke, so values are pasted (one edit), not typed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.airflow_stack import REGISTRY, REPO_ROOT, Stack, api_token, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.airflow]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("GENBATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--headless"]
DAG = "batch_generation"
RUN_ID = "ui-run"
FORM_FIELDS = ("task", "input", "model", "generation", "sharding", "output", "run_id")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trigger-form")


@pytest.fixture(scope="module")
def stack(work: Path) -> Iterator[Stack]:
    env = {"GENBATCH_ALLOWED_PREFIXES": ",".join(str(p) for p in (work, REPO_ROOT / "examples", REGISTRY))}
    with running_stack(work / "airflow", extra_env=env) as s:
        yield s


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`, "
                    "or point GENBATCH_CHROMIUM at a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing (never `playwright install`: Debian's chromium is used)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1400},
                                          permissions=["clipboard-read", "clipboard-write"])
            yield context.new_page()
        finally:
            browser.close()


def _login(page: Any, stack: Stack, user: str) -> None:
    page.goto(stack.url + "/", wait_until="networkidle")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", stack.users[user])
    page.locator("input[type=submit], button[type=submit]").first.click()
    page.wait_for_load_state("networkidle")


def _editor(dialog: Any, label: str) -> Any:
    """The Monaco editor in the form row whose label is ``label``."""
    row = dialog.locator(f"xpath=.//*[normalize-space(text())='{label}']"
                         "/ancestor::*[.//div[contains(@class,'monaco-editor')]][1]")
    return row.locator(".monaco-editor").first


def _editor_json(editor: Any) -> Any:
    return json.loads(editor.locator(".view-lines").inner_text().replace("\u00a0", " "))


def _marked_required(dialog: Any, name: str) -> bool:
    """Whether the form row's label carries the required mark (Chakra's RequiredIndicator, a '*')."""
    label = dialog.locator(f"xpath=.//label[normalize-space(text())='{name}']")
    return "*" in label.first.inner_text()


def _paste_json(page: Any, dialog: Any, label: str, value: dict[str, Any]) -> None:
    editor = _editor(dialog, label)
    page.evaluate("text => navigator.clipboard.writeText(text)", json.dumps(value))
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Control+V")
    page.wait_for_timeout(300)
    assert _editor_json(editor) == value


def test_operator_triggers_from_the_form_and_sees_success(stack: Stack, page: Any, work: Path) -> None:
    rows = (REPO_ROOT / "examples/catalog/items.jsonl").read_text().splitlines()[:24]
    input_path = work / "input.jsonl"
    input_path.write_text("\n".join(rows) + "\n")
    admin = {"Authorization": f"Bearer {api_token(stack.url, 'admin', stack.users['admin'])}"}
    assert httpx.patch(f"{stack.url}/api/v2/dags/{DAG}", json={"is_paused": False}, headers=admin).status_code == 200

    _login(page, stack, "operator")
    page.goto(f"{stack.url}/dags/{DAG}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").click()
    dialog = page.get_by_role("dialog")
    dialog.locator(".monaco-editor").first.wait_for()
    # The form shows the Params with the RunSpec's defaults and enums.
    assert _editor_json(_editor(dialog, "model")) == {"name": "catalog-copy", "alias": "production"}
    from genbatch.run.spec import RunSpec, ShardingSpec

    assert _editor_json(_editor(dialog, "sharding")) == ShardingSpec().model_dump(mode="json")
    # Only the RunSpec's required fields carry the required mark; each field shows its spec description.
    assert {name: _marked_required(dialog, name) for name in FORM_FIELDS} == {
        name: name in {"task", "input", "model"} for name in FORM_FIELDS}
    for name in ("task", "generation", "output"):
        dialog.get_by_text(str(RunSpec.model_fields[name].description), exact=True).wait_for(timeout=5_000)
    # task: an enum field (a select), showing the RunSpec's default and nothing else.
    task_help = RunSpec.model_fields["task"].description  # has single quotes, no double ones
    task = dialog.locator("xpath=.//*[normalize-space(text())='task']"
                          f"/ancestor::*[.//*[normalize-space(text())=\"{task_help}\"]][1]")
    shown = [line.strip() for line in task.inner_text().splitlines() if line.strip()]
    assert "text" in shown and "image" not in shown, shown
    page.screenshot(path=str(ARTIFACTS / "trigger-form-1-defaults.png"), full_page=True)

    _paste_json(page, dialog, "input", {"uri": str(input_path)})
    _paste_json(page, dialog, "sharding", {"num_shards": 2})
    _paste_json(page, dialog, "output", {"uri": str(work / "runs")})
    run_id = dialog.locator("xpath=.//*[normalize-space(text())='run_id']/ancestor::*[.//input][1]").locator("input")
    run_id.first.fill(RUN_ID)
    page.screenshot(path=str(ARTIFACTS / "trigger-form-2-filled.png"), full_page=True)
    dialog.get_by_role("button", name="Trigger").click()
    page.wait_for_url(f"**/dags/{DAG}/runs/**", timeout=30_000)
    dag_run_id = page.url.rsplit("/runs/", 1)[1].split("?")[0]
    dag_run_id = httpx.URL(f"http://x/{dag_run_id}").path.lstrip("/")  # undo percent-encoding

    deadline = time.monotonic() + 420
    state = "queued"
    while time.monotonic() < deadline and state not in {"success", "failed"}:
        time.sleep(5)
        state = httpx.get(f"{stack.url}/api/v2/dags/{DAG}/dagRuns/{dag_run_id}", headers=admin,
                          timeout=60).json()["state"]  # a busy machine answers slower than httpx's 5 s default
    page.reload(wait_until="networkidle")
    header = page.get_by_text(dag_run_id, exact=True).first
    header.wait_for()
    page.get_by_text("Success", exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "trigger-form-3-run.png"), full_page=True)
    assert state == "success"
    run = httpx.get(f"{stack.url}/api/v2/dags/{DAG}/dagRuns/{dag_run_id}", headers=admin).json()
    assert run["triggering_user_name"] == "operator" and run["conf"]["sharding"] == {"num_shards": 2}
    root = work / "runs" / RUN_ID
    manifest = json.loads((root / "manifest.json").read_text())
    assert (root / "_SUCCESS").exists() and manifest["counts"]["input"] == 24
    assert [s["shard"] for s in manifest["shards"]] == [0, 1]
