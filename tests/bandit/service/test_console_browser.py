"""The web console and /docs in a real browser: Debian's Chromium driven by Playwright, against
the service under uvicorn on 127.0.0.1 (``tests.servers.live``). The page sees decisions
arrive, pauses and resumes a campaign and adds and retires an arm with the management token
(the API agrees), shows the bias audit as a heatmap with names as text, renders at 1280 px and
on a phone without horizontal overflow, and neither page asks anything of another host.
Screenshots go to a temporary folder (printed with ``-s``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bandit.engine import Engine
from bandit.service import create_app
from bandit.settings import Settings
from tests.servers import live

pytestmark = pytest.mark.slow  # a browser, a server, and pages that poll every 2 s

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "console-s3cret"
MANAGED = {"authorization": f"Bearer {TOKEN}"}
# A segment value is any label: the page must show it as text, never run it.
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
REGIONS = ("eu", "us", XSS)
CAMPAIGN = "news"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def decide(client: httpx.Client, n: int, start: int = 0) -> list[dict[str, Any]]:
    requests = [{"campaign": CAMPAIGN, "user_id": f"user-{i}",
                 "context": {"engagement": (i % 10) / 10, "plan": "pro"},
                 "segments": {"region": REGIONS[i % 3]}} for i in range(start, start + n)]
    response = client.post("/v1/decisions/batch", json={"campaign": CAMPAIGN,
                                                        "requests": requests})
    assert response.status_code == 200, response.text
    return response.json()["decisions"]


@pytest.fixture(scope="module")
def server(newsletter_spec: Callable[[str], dict[str, Any]]) -> Iterator[httpx.Client]:
    """A service with a management token and a campaign whose 300 learned decisions carry a
    region: every 'eu' one clicked, no other (so the audit flags each region's reward rate)."""
    engine = Engine(seed=0)
    engine.warm_up()  # compiled before the server's readiness deadline starts
    with live(create_app(engine, Settings(api_token=TOKEN))) as client:
        response = client.post("/v1/campaigns", json=newsletter_spec(CAMPAIGN), headers=MANAGED)
        assert response.status_code == 201, response.text
        decisions = decide(client, 300)
        now = time.time_ns() // 10**6  # the service logs its decisions at its clock's time
        clicks = [{"type": "click", "event_id": f"click-{d['decision_id']}",
                   "decision_id": d["decision_id"], "ts": now + 500}
                  for i, d in enumerate(decisions) if i % 3 == 0]
        # A click a minute later closes every attribution window (1 s): all 300 are learned.
        late = {"type": "click", "event_id": "late", "decision_id": decisions[1]["decision_id"],
                "ts": now + 60_000}
        assert client.post("/v1/events", json=[*clicks, late]).status_code == 200
        assert client.get(f"/v1/campaigns/{CAMPAIGN}/report").json()["impressions"] == 300
        yield client


@pytest.fixture
def page(browser: Browser, server: httpx.Client) -> Iterator[Page]:
    """A fresh page (1280 x 900) whose every request must go to the server."""
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  base_url=str(server.base_url))
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    yield page
    context.close()
    base = str(server.base_url)
    assert [url for url in requested if not url.startswith(base)] == []


def section(page: Page):  # noqa: ANN201 (a Locator)
    return page.locator(f'section[data-campaign="{CAMPAIGN}"]')


def test_the_console_sees_decisions_arrive(page: Page, server: httpx.Client) -> None:
    page.goto("/console")
    served = section(page).locator('[data-stat="decisions"]')
    expect(served).to_have_text("300")
    expect(section(page).locator('[data-stat="learned"]')).to_have_text("300")
    decide(server, 40, start=1000)
    expect(served).to_have_text("340")  # within a few polls
    # Two polls apart with decisions between them: a rate, and the allocation over time.
    expect(section(page).locator('[data-stat="rate"]')).not_to_have_text("n/a")
    decide(server, 40, start=2000)
    expect(served).to_have_text("380")
    expect(section(page).locator(".chart svg rect").first).to_be_visible()


def test_the_heatmap_marks_flagged_values_and_shows_names_as_text(page: Page) -> None:
    page.goto("/console")
    heatmap = section(page).locator("table.heatmap").first
    expect(heatmap.locator("tr.flagged")).to_have_count(3)  # each region's reward rate
    expect(heatmap.locator("tr.reason").first).to_contain_text("reward rate")
    expect(heatmap.locator("tbody tr").first).to_contain_text("every decision")
    expect(heatmap.get_by_text(f"region = {XSS}", exact=False)).to_be_visible()
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x']").count() == 0
    # The cells are the report's allocation: a row sums to 100%.
    cells = heatmap.locator("tr.flagged").first.locator("td.cell").all_inner_texts()
    assert abs(sum(float(c.rstrip("%")) for c in cells) - 100) < 0.5


def test_pause_and_resume_with_the_token(page: Page, server: httpx.Client) -> None:
    page.goto("/console")
    badge = section(page).locator(".title .badge")
    expect(badge).to_have_text("running")
    pause = section(page).locator('button[data-action="pause"]')
    pause.click()  # no token yet: refused, and the page says why
    expect(page.locator("#message")).to_contain_text("401")
    expect(page.locator("#message")).to_contain_text("management token")
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    pause.click()
    expect(badge).to_have_text("paused")
    expect(pause).to_have_text("Resume")
    assert server.get(f"/v1/campaigns/{CAMPAIGN}/report").json()["paused"] is True
    pause.click()
    expect(badge).to_have_text("running")
    assert server.get(f"/v1/campaigns/{CAMPAIGN}/report").json()["paused"] is False


def test_add_and_retire_an_arm(page: Page, server: httpx.Client) -> None:
    page.goto("/console")
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    form = section(page).locator('form[data-action="add-arm"]')
    form.locator("select").select_option("subject_line")
    form.locator('input[name="arm"]').fill("bold")
    form.locator("button").click()
    row = section(page).locator('tr[data-arm="bold"]')
    expect(row).to_be_visible()
    spec = server.get(f"/v1/campaigns/{CAMPAIGN}").json()
    assert "bold" in [a["id"] for s in spec["slots"] for a in s["arms"]]
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button[data-retire]").click()
    expect(row.locator(".badge.retired")).to_be_visible()
    report = server.get(f"/v1/campaigns/{CAMPAIGN}/report").json()
    (arm,) = [a for s in report["slots"] for a in s["arms"] if a["arm"] == "bold"]
    assert arm["active"] is False


def test_docs_render_offline(page: Page, tmp_path_factory: pytest.TempPathFactory) -> None:
    page.goto("/docs")
    operation = page.locator(".opblock-summary-path", has_text="/v1/decisions/batch")
    expect(operation).to_be_visible()
    operation.click()  # an operation opens, with its parameters and answers
    expect(page.locator(".opblock-body .responses-wrapper").first).to_be_visible()
    page.screenshot(path=tmp_path_factory.mktemp("docs-screenshot") / "docs.png",
                    full_page=True)


def test_readable_at_1280_px_and_on_a_phone(browser: Browser, server: httpx.Client,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("console-screenshots")
    sizes = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
    for k, (name, viewport) in enumerate(sizes.items()):
        context = browser.new_context(viewport=viewport, base_url=str(server.base_url),
                                      is_mobile=name == "phone", has_touch=name == "phone")
        page = context.new_page()
        page.goto("/console")
        expect(section(page).locator("table.heatmap").first).to_be_visible()
        decide(server, 30, start=3000 + 100 * k)  # after the first poll: drawn at the next
        expect(section(page).locator(".chart svg rect").first).to_be_visible()
        # The page never scrolls sideways: wide tables scroll inside their boxes.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        page.screenshot(path=out / f"console-{name}.png", full_page=True)
        context.close()
    print(f"screenshots in {out}")
