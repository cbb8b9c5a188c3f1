"""The web console in a real browser (issue 15): headless Chromium from Debian driven by Playwright,
against real servers; jobs created and stopped through boto3 and through the pages.

The screenshots in docs/ (console-jobs.png, console-job.png) are taken here.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import ROOT, ServerProcess, minimal_request, unique_name, wait_for_job, wait_until

try:
    from playwright import sync_api
except ImportError:  # the test extra brings it; CI must have it
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (the test extra)", allow_module_level=True)
CHROMIUM = Path(os.environ.get("TRAINFORGE_CHROMIUM", "/usr/bin/chromium"))
VALUES = (2.5, 1.75, 1.125, 0.8125, 0.5)
WAIT_MS = 60_000
ACCOUNT_A, ACCOUNT_B = "111111111111", "222222222222"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise AssertionError("Chromium is not installed: scripts/test installs Debian's chromium")
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def gated_job(name: str, bucket: str, gate: Path, before: str = "", after: str = "") -> dict[str, Any]:
    """A job that runs ``before``, waits for the file ``gate``, then runs ``after``."""
    script = "; ".join(part for part in (before, 'while [ ! -e "$GATE" ]; do sleep 0.1; done', after) if part)
    req = minimal_request(name, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
                          Environment={"GATE": str(gate)})
    req["AlgorithmSpecification"]["ContainerArguments"] = [script]
    return req


def test_jobs_page_lists_the_jobs_and_follows_a_completion_without_reloading(
        server_factory: Any, tmp_path: Path, bucket: str, page: Any) -> None:
    srv: ServerProcess = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    quick, gated = unique_name("quick"), unique_name("gated")
    sm.create_training_job(**minimal_request(quick, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"}))
    sm.create_training_job(**gated_job(gated, bucket, tmp_path / "gate", before="echo waiting"))
    wait_for_job(sm, quick, "Completed")
    wait_for_job(sm, gated, "Training", secondary=True)

    page.goto(srv.endpoint + "/console")
    page.wait_for_selector(f'tr[data-job="{quick}"][data-status="Completed"]', timeout=WAIT_MS)
    row = page.locator(f'tr[data-job="{gated}"]')
    assert row.get_attribute("data-status") == "InProgress"
    assert "ml.m5.large × 1" in row.inner_text()
    assert "Capacity in use: 1 instances" in page.inner_text("#capacity")
    assert row.locator("a.logs-link").get_attribute("href").endswith(f"/console/jobs/{gated}#logs")
    page.screenshot(path=str(ROOT / "docs" / "console-jobs.png"), full_page=True)
    page.evaluate("window.notReloaded = true")

    (tmp_path / "gate").write_text("go")
    page.wait_for_selector(f'tr[data-job="{gated}"][data-status="Completed"]', timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True  # the same document: updated in place
    assert sm.describe_training_job(TrainingJobName=gated)["TrainingJobStatus"] == "Completed"

    # a page of another host name (DNS rebinding onto this loopback address) gets no session
    rebound = urllib.request.Request(srv.endpoint + "/console", headers={"Host": f"rebound.example:{srv.port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(rebound, timeout=10)
    assert refused.value.code == 403 and "set-cookie" not in refused.value.headers

    # the filters are ListTrainingJobs's: a name search shows that job alone
    page.fill("#f-name", quick)
    page.click("#filters button[type=submit]")
    page.wait_for_function("n => document.querySelectorAll('#jobs tbody tr').length === n", arg=1)
    assert page.locator("#jobs tbody tr").get_attribute("data-job") == quick


def test_job_page_follows_the_logs_charts_the_metric_and_stops_the_job(
        server_factory: Any, tmp_path: Path, bucket: str, page: Any) -> None:
    srv: ServerProcess = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    name = unique_name("watched")
    before = "; ".join(f"echo 'epoch {i} loss={v}'" for i, v in enumerate(VALUES))
    req = gated_job(name, bucket, tmp_path / "gate", before=before,
                    after="echo after-the-gate; while true; do sleep 0.1; done")
    req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}]
    req["HyperParameters"] = {"epochs": str(len(VALUES)), "learning_rate": "0.05"}
    sm.create_training_job(**req)

    page.goto(f"{srv.endpoint}/console/jobs/{name}")
    # the chart's own data (what uPlot draws: the host's series, on the chart's joined time axis)
    points = ("(c => c?.plot ? c.plot.data[1 + [...c.series.keys()].indexOf('algo-1')].filter(v => v != null) : [])"
              "(window.consoleCharts?.get('chart-algorithm-loss'))")
    page.wait_for_function(f"n => {points}.length === n", arg=len(VALUES), timeout=WAIT_MS)
    assert page.evaluate(points) == list(VALUES)
    page.wait_for_selector("#chart-algorithm-loss canvas", timeout=WAIT_MS)
    assert "epoch 4 loss=0.5" in page.inner_text("#logs")
    # S3 locations: the s3:// URI, with a button that copies it (there is no S3 console to link to)
    output_path = page.locator("#output code.s3-uri").nth(1)
    assert output_path.inner_text() == f"s3://{bucket}/out"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    copy = output_path.locator("xpath=following-sibling::button[1]")
    copy.click()
    page.wait_for_function("b => b.textContent === 'Copied'", arg=copy.element_handle(), timeout=WAIT_MS)
    assert page.evaluate("navigator.clipboard.readText()") == f"s3://{bucket}/out"
    page.evaluate("window.notReloaded = true")

    (tmp_path / "gate").write_text("go")
    page.wait_for_function("document.getElementById('logs').innerText.includes('after-the-gate')", timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True
    assert page.inner_text("#status") == "InProgress"

    # another job's series overlaid on the same chart, beside this job's own
    other, other_values = unique_name("compared"), (3.0, 2.0, 1.0)
    req = minimal_request(other, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"})
    req["AlgorithmSpecification"]["ContainerArguments"] = ["; ".join(f"echo 'loss={v}'" for v in other_values)]
    req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}]
    sm.create_training_job(**req)
    assert wait_for_job(sm, other)["TrainingJobStatus"] == "Completed"
    page.fill("#compare", other)
    page.click("#compare-apply")
    overlaid = points.replace("'algo-1'", f"'{other} algo-1'")
    page.wait_for_function(f"n => {overlaid}.length === n", arg=len(other_values), timeout=WAIT_MS)
    assert page.evaluate(overlaid) == list(other_values)
    assert page.evaluate(points) == list(VALUES)  # its own series still drawn, unchanged
    page.screenshot(path=str(ROOT / "docs" / "console-job.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop")
    described = wait_until(lambda: sm.describe_training_job(TrainingJobName=name), timeout=60,
                           message="the job to be stopping", until=lambda d: d["TrainingJobStatus"] != "InProgress")
    assert described["TrainingJobStatus"] in ("Stopping", "Stopped")
    assert "Stopping" in [t["Status"] for t in described["SecondaryStatusTransitions"]]
    page.wait_for_function("['Stopping', 'Stopped'].includes(document.getElementById('status').innerText)",
                           timeout=WAIT_MS)


def _sign_in(page: Any, srv: ServerProcess, key: str, secret: str) -> Any:
    page.goto(srv.endpoint + "/console")
    assert page.url.endswith("/console/signin")
    page.fill("#access_key", key)
    page.fill("#secret_key", secret)
    with page.expect_navigation():
        page.click("#signin")
    return page


def _console_fetch(page: Any, path: str, method: str = "GET", body: Any = None, csrf: bool = True) -> Any:
    return page.evaluate("""async ([path, method, body, csrf]) => {
        const headers = {'Content-Type': 'application/json'};
        if (csrf) headers['X-CSRF-Token'] = document.querySelector('meta[name="csrf-token"]').content;
        const r = await fetch(path, {method, headers, body: body === null ? undefined : JSON.stringify(body)});
        return {status: r.status, body: await r.json()};
    }""", [path, method, body, csrf])


@pytest.fixture
def accounts_server(server_factory: Any, tmp_path: Path) -> ServerProcess:
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"AKIAALICE": {"secret_access_key": "alice-secret", "account_id": ACCOUNT_A},
                                 "AKIABOB": {"secret_access_key": "bob-secret", "account_id": ACCOUNT_B}}))
    roles = {f"arn:aws:iam::{acct}:role/R": {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
             for acct in (ACCOUNT_A, ACCOUNT_B)}
    srv: ServerProcess = server_factory({"credentials_file": str(creds), "roles": roles})
    return srv


def test_sign_in_accounts_and_csrf(accounts_server: ServerProcess, browser: Any, bucket: str) -> None:
    srv = accounts_server
    alice = srv.client(access_key="AKIAALICE", secret_key="alice-secret")
    job = unique_name("alice")
    alice.create_training_job(**minimal_request(job, RoleArn=f"arn:aws:iam::{ACCOUNT_A}:role/R",
                                                OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"}))

    # a wrong secret is refused with the API's own message, and no session is opened
    context = browser.new_context()
    page = _sign_in(context.new_page(), srv, "AKIAALICE", "not-the-secret")
    assert page.url.endswith("/console/signin")
    assert "Sign-in refused: The request signature we calculated does not match" in page.inner_text("#error")
    assert not [c for c in context.cookies() if c["name"] == "tf_console"]
    page.goto(srv.endpoint + "/console")
    assert page.url.endswith("/console/signin")

    page = _sign_in(page, srv, "AKIAALICE", "alice-secret")
    page.wait_for_selector(f'tr[data-job="{job}"]', timeout=WAIT_MS)
    cookie = next(c for c in context.cookies() if c["name"] == "tf_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    # state changes need the page's CSRF token: without it, refused and nothing created
    clone = {**minimal_request(unique_name("clone"), RoleArn=f"arn:aws:iam::{ACCOUNT_A}:role/R",
                               OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"})}
    refused = _console_fetch(page, "/console/api/jobs", "POST", clone, csrf=False)
    assert refused["status"] == 403 and refused["body"]["code"] == "InvalidCsrfToken"
    stop_refused = _console_fetch(page, f"/console/api/jobs/{job}/stop", "POST", {}, csrf=False)
    assert stop_refused["status"] == 403
    with pytest.raises(ClientError):
        alice.describe_training_job(TrainingJobName=clone["TrainingJobName"])
    # the create form's answers are the API's: an invalid name gets the same message as through boto3
    bad = {**clone, "TrainingJobName": "bad_name!"}
    invalid = _console_fetch(page, "/console/api/jobs", "POST", bad)
    with pytest.raises(ClientError) as through_api:
        srv.client(access_key="AKIAALICE", secret_key="alice-secret", validate=False).create_training_job(**bad)
    assert invalid["status"] == 400 and invalid["body"]["message"] == through_api.value.response["Error"]["Message"]
    created = _console_fetch(page, "/console/api/jobs", "POST", clone)
    assert created["status"] == 200, created
    assert alice.describe_training_job(TrainingJobName=clone["TrainingJobName"])["TrainingJobArn"].split(":")[4] \
        == ACCOUNT_A
    context.close()

    # a second account sees none of the first's jobs, not even by name
    context = browser.new_context()
    page = _sign_in(context.new_page(), srv, "AKIABOB", "bob-secret")
    page.wait_for_function("Number(document.body.dataset.ready) >= 1", timeout=WAIT_MS)
    assert page.locator("#jobs tbody tr").count() == 0
    listed = _console_fetch(page, "/console/api/jobs")
    assert listed["status"] == 200 and listed["body"]["jobs"] == []
    assert _console_fetch(page, f"/console/api/jobs/{job}")["status"] == 400
    assert _console_fetch(page, f"/console/api/jobs/{job}/logs")["status"] == 400
    context.close()


def test_clone_prefills_the_create_form_and_answers_with_the_apis_messages(
        server_factory: Any, bucket: str, page: Any) -> None:
    srv: ServerProcess = server_factory()
    sm = srv.client()
    name = unique_name("orig")
    sm.create_training_job(**minimal_request(name, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
                                             HyperParameters={"epochs": "3"}))
    page.goto(f"{srv.endpoint}/console/jobs/{name}")
    page.wait_for_function("document.body.dataset.ready", timeout=WAIT_MS)
    page.click("#clone")
    page.wait_for_function("document.getElementById('request').value.includes('epochs')", timeout=WAIT_MS)
    assert page.input_value("#job-name") == f"{name}-clone"

    page.fill("#job-name", "bad name")
    page.click("#create")
    page.wait_for_function("document.getElementById('error').innerText.length > 0", timeout=WAIT_MS)
    with pytest.raises(ClientError) as through_api:
        srv.client(validate=False).create_training_job(**{**minimal_request("bad name"), "HyperParameters": {}})
    assert page.inner_text("#error") == through_api.value.response["Error"]["Message"]

    page.fill("#job-name", f"{name}-2")
    with page.expect_navigation():
        page.click("#create")
    assert page.url.endswith(f"/console/jobs/{name}-2")
    assert sm.describe_training_job(TrainingJobName=f"{name}-2")["HyperParameters"] == {"epochs": "3"}
