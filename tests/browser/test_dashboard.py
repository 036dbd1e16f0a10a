"""The dashboard in a real browser against real ``cmnode run`` processes: a job created from the form reaches
``complete`` and shows its logs without a reload, the jobs page follows new jobs live, a running job's output is
followed as it is written and Stop stops it,
a second node appears on the nodes page, and a node with ``--rpc-token`` asks for the token once per tab.

Every change on screen comes from ``/events``: the pages load once and never poll (one test watches a page
stay quiet), and a marker set in ``window`` at the start proves there was no reload.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import call

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

IMAGE = "cmnode-test/busybox:latest"
TOKEN = "browser-secret-token"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def open_page(page: Any, node: Any, route: str) -> None:
    """Open the dashboard at ``route`` and wait until its event stream is live; mark the window so that a
    reload (which would clear the mark) is seen."""
    page.goto(f"{node.url}/ui/#/{route}")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__cmnodeNoReload = true")


def not_reloaded(page: Any) -> bool:
    return page.evaluate("window.__cmnodeNoReload === true") is True


@pytest.mark.docker
def test_a_job_created_from_the_form_completes_and_shows_its_logs_live(
    page: Any, start_node: Any, test_image: str, shots: Path
) -> None:
    node = start_node("alpha")
    open_page(page, node, "create")
    page.fill("#f-image", "Not An Image")
    page.click("#f-submit")
    expect(page.locator("#create-error")).to_contain_text("image: is not a valid image reference")
    expect(page).to_have_url(re.compile(r"#/create$"))
    page.fill("#f-image", IMAGE)
    page.fill("#f-command", "sh -c 'echo hello from the form; sleep 2; echo done'")
    page.fill("#f-name", "from-the-form")
    page.fill("#f-env", "GREETING=hi")
    page.fill("#f-labels", "team=ui")
    page.select_option("#f-restart", "on-failure")
    page.fill("#f-retries", "1")
    expect(page.locator("#create-preview")).to_contain_text('"GREETING": "hi"')
    page.screenshot(path=str(shots / "create.png"), full_page=True)
    page.click("#f-submit")

    expect(page).to_have_url(re.compile(r"#/job/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-status")).to_have_text("running")
    expect(page.locator("#job-status")).to_have_text("complete", timeout=30_000)
    expect(page.locator("#logs-stdout")).to_contain_text("hello from the form")
    expect(page.locator("#logs-stdout")).to_contain_text("done")
    expect(page.locator(".execution-row .execution-state")).to_have_text(["complete"])
    expect(page.locator("#job-stop")).to_be_disabled()
    expect(page.locator("#logs-source")).to_have_text(
        re.compile(r"attempt 1, from (container|store)")
    )  # followed to its end
    assert not_reloaded(page)

    spec = call(node, "ContainerService.Status", {"job_id": job_id})["spec"]
    assert spec["arguments"] == ["sh", "-c", "echo hello from the form; sleep 2; echo done"]
    assert spec["env"] == {"GREETING": "hi"} and spec["labels"] == {"team": "ui"} and spec["name"] == "from-the-form"
    assert spec["restart"] == "on-failure" and spec["retries"] == 1
    page.screenshot(path=str(shots / "job.png"), full_page=True)

    # The page asks the node only when an event says something changed (a Status and the logs at most, per
    # event): a page that polled would ask with no event at all.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    events = page.evaluate("Alpine.store('live').count")
    page.wait_for_timeout(3000)
    events = page.evaluate("Alpine.store('live').count") - events
    assert len(requests) <= 2 * events, (requests, events)


@pytest.mark.docker
def test_the_jobs_page_follows_new_jobs_pages_and_filters(
    page: Any, start_node: Any, test_image: str, shots: Path
) -> None:
    node = start_node("alpha")
    first = call(node, "ContainerService.Create", {"image": IMAGE, "arguments": ["true"], "labels": {"team": "db"}})
    open_page(page, node, "jobs?limit=2")
    expect(page.locator(".job-row")).to_have_count(1)
    expect(page.locator("#jobs-older")).to_be_disabled()

    spec = {"image": IMAGE, "arguments": ["sleep", "1"], "name": "live-one", "labels": {"team": "web"}}
    job_id = call(node, "ContainerService.Create", spec)["job_id"]
    row = page.locator(f'.job-row[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    expect(page.locator(".job-row")).to_have_count(2)
    expect(row.locator(".job-status")).to_have_text("complete", timeout=30_000)
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)

    last = call(node, "ContainerService.Create", {"image": IMAGE, "arguments": ["true"]})["job_id"]
    expect(page.locator(".job-row").first).to_have_attribute("data-job-id", last)  # newest first, two a page
    expect(page.locator(".job-row")).to_have_count(2)
    page.click("#jobs-older")
    expect(page.locator(".job-row")).to_have_count(1)
    expect(page.locator(".job-row")).to_have_attribute("data-job-id", first["job_id"])
    page.click("#jobs-newer")
    expect(page.locator(".job-row")).to_have_count(2)

    page.fill("#filter-labels", "team=web")
    page.click("#jobs-filter button[type=submit]")
    expect(page.locator(".job-row")).to_have_count(1)
    expect(row).to_be_visible()
    page.select_option("#filter-status", "failed")
    page.click("#jobs-filter button[type=submit]")
    expect(page.locator(".job-row")).to_have_count(0)
    assert not_reloaded(page)


@pytest.mark.docker
def test_a_running_job_is_followed_and_stopped(page: Any, start_node: Any, test_image: str) -> None:
    node = start_node("alpha")
    done = call(node, "ContainerService.Create", {"image": IMAGE, "arguments": ["echo", "earlier"]})["job_id"]
    script = "echo first; sleep 2; echo second; sleep 300"
    job_id = call(node, "ContainerService.Create", {"image": IMAGE, "arguments": ["sh", "-c", script]})["job_id"]
    open_page(page, node, f"job/{done}")
    expect(page.locator("#job-status")).to_have_text("complete", timeout=30_000)
    page.click("#nav-jobs")
    page.click(f'.job-row[data-job-id="{job_id}"] a')  # from the list to the job

    expect(page.locator("#job-id")).to_have_text(job_id)
    expect(page.locator("#job-status")).to_have_text("running", timeout=30_000)
    # followed as it is written (GET /logs): no event comes between the two lines
    expect(page.locator("#logs-source")).to_have_text("attempt 1, following")
    expect(page.locator("#logs-stdout")).to_contain_text("first")
    expect(page.locator("#logs-stdout")).to_have_text("first\nsecond\n")
    page.click("#job-stop")
    expect(page.locator("#job-message")).to_contain_text("Job stop requested")
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=30_000)
    expect(page.locator("#job-stop")).to_be_disabled()
    assert call(node, "ContainerService.Status", {"job_id": job_id})["status"] == "cancelled"

    page.evaluate(f"location.hash = '#/job/{done}'")  # one job's page to another's: the page follows
    expect(page.locator("#job-id")).to_have_text(done)
    expect(page.locator("#job-status")).to_have_text("complete")
    expect(page.locator("#logs-stdout")).to_have_text("earlier\n")
    assert not_reloaded(page)


def test_a_second_node_appears_on_the_nodes_page(page: Any, start_node: Any, shots: Path) -> None:
    first = start_node("alpha", "--node-label", "zone=a")
    open_page(page, first, "nodes")
    expect(page.locator(".node-row")).to_have_count(1)
    expect(page.locator("#node-name")).to_have_text("alpha")

    seed = call(first, "NodeService.Info")["addresses"][0]
    second = start_node("beta", "--node-label", "zone=b", "--bootstrap", seed)
    row = page.locator(f'.node-row[data-node-id="{second.node_id}"]')
    expect(row).to_be_visible(timeout=30_000)
    expect(row.locator(".node-name-cell")).to_have_text("beta")
    expect(row).to_contain_text("ready")
    expect(row).to_contain_text("zone=b")
    expect(page.locator(".peer-row")).to_have_count(1)
    expect(page.locator(".peer-row")).to_contain_text("beta")
    assert not_reloaded(page)
    page.screenshot(path=str(shots / "nodes.png"), full_page=True)


def test_a_node_with_a_token_asks_for_it_once_per_tab(page: Any, start_node: Any, shots: Path) -> None:
    node = start_node("alpha", "--rpc-token", TOKEN)
    urls: list[str] = []
    authorized: dict[str, str] = {}

    def seen(request: Any) -> None:
        urls.append(request.url)
        path = request.url.split(node.url, 1)[-1]
        if path.startswith(("/jrpc", "/events")) and "authorization" in request.headers:
            authorized[path.split("?")[0]] = request.headers["authorization"]

    page.on("request", seen)
    page.goto(f"{node.url}/ui/")
    expect(page.locator("#token-form")).to_be_visible()
    page.screenshot(path=str(shots / "token.png"))

    page.fill("#token-input", "not-the-token")
    page.click("#token-save")
    expect(page.locator("#token-error")).to_have_text("that token was refused")
    expect(page.locator("#token-form")).to_be_visible()

    page.fill("#token-input", TOKEN)
    page.click("#token-save")
    expect(page.locator("#token-form")).to_be_hidden()
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator(".node-row")).to_have_count(1)
    assert authorized == {"/jrpc": f"Bearer {TOKEN}", "/events": f"Bearer {TOKEN}"}

    page.reload()  # the same tab keeps it
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator(".node-row")).to_have_count(1)
    expect(page.locator("#token-form")).to_be_hidden()
    assert not any(TOKEN in url for url in urls), "the token must never be put in a URL"

    fresh = page.context.new_page()  # another tab has its own sessionStorage: asked again
    fresh.goto(f"{node.url}/ui/")
    expect(fresh.locator("#token-form")).to_be_visible()


@pytest.mark.docker
def test_the_stream_resumes_after_a_drop_without_missing_an_event(
    page: Any, start_node: Any, relay: Any, test_image: str
) -> None:
    node = start_node("alpha")
    through = relay(node)
    page.goto(f"{through.url}/ui/#/jobs")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__cmnodeNoReload = true")
    expect(page.locator(".job-row")).to_have_count(0)

    with page.expect_request(lambda request: request.url.endswith("/events")) as reconnect:
        assert through.cut() >= 1  # the page's stream (and any other connection) ends
        # while it is away, a job is created (directly, not through the relay)
        job_id = call(node, "ContainerService.Create", {"image": IMAGE, "arguments": ["true"]})["job_id"]
    assert reconnect.value.headers.get("last-event-id"), "the page resumes after the last event it saw"
    # Only the missed `job` event adds the row: the page fetched the list once, before the drop.
    expect(page.locator(f'.job-row[data-job-id="{job_id}"]')).to_be_visible(timeout=40_000)
    expect(page.locator("#live")).to_have_text("live")
    assert not_reloaded(page)
