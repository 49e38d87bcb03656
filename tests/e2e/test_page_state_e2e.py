"""The page as a returning user meets it, in Chromium against the real ``python app.py``
(issue #15 items 11 and 14): the open tab and the open job live in the URL, so a reload or a
shared link comes back to them (and a URL never opens what its reader may not see); a form
does not keep a stale value that would refuse the next file, says what it was reset to, and an
old status message does not linger once it no longer describes the screen; the dataset
preview's header row stays one line high."""

from __future__ import annotations

import json
import re

import pytest

from test_dashboard_e2e import EVENT_TIMEOUT_MS, fill, shot, sign_in, tab, upload_files, wait_text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PASSWORD = "page-state-password"


@pytest.fixture(scope="module")
def carol(browser, dashboard):
    """A member of organisation hooli with one finished job; a job of another organisation."""
    from storage import accounts
    from storage.accounts import principal
    from storage.db import session_scope
    from storage.settings import Settings
    from workers.client import JobClient

    settings = Settings(data_dir=dashboard.data_dir, _env_file=None)
    with session_scope(settings=settings) as s:
        accounts.create_user(s, "hooli", "carol", PASSWORD, "member")
        accounts.create_user(s, "initrode", "dave", PASSWORD, "member")
        carol_p, dave_p = principal(s, "carol"), principal(s, "dave")
    client = JobClient(settings, run_embedded=False)  # run by the dashboard's own worker
    jobs = {}
    for who, p in (("carol", carol_p), ("dave", dave_p)):
        view = client.wait(client.submit("selftest", {"steps": 2, "step_s": 0.0}, p), timeout=120)
        assert view.status == "succeeded", view.error
        jobs[who] = view.id
    ctx, page = sign_in(browser, dashboard, "carol", PASSWORD)
    yield ctx, page, jobs
    ctx.close()


def selected_tab(page) -> str:
    return page.locator("#tabs button[role=tab][aria-selected=true]").inner_text().strip()


def test_the_url_keeps_the_open_tab_and_job_across_a_reload(carol, dashboard, shots):
    ctx, page, jobs = carol
    tab(page, "Jobs")
    assert "tab=jobs" in page.url, page.url
    fill(page, "job-id", str(jobs["carol"]))
    page.locator("#job-show").click()
    wait_text(page, "#job-detail", rf"Job {jobs['carol']}\b.*succeeded")
    assert f"job={jobs['carol']}" in page.url, page.url

    page.reload()
    wait_text(page, "#whoami", r"carol · hooli")
    wait_text(page, "#job-detail", rf"Job {jobs['carol']}\b.*succeeded")  # the job is open again ...
    assert selected_tab(page) == "Jobs"  # ... on its tab
    shot(page, shots, "12-url-state-after-reload")

    # shareable: the same URL in a new page opens the same place
    other = ctx.new_page()
    other.goto(page.url)
    wait_text(other, "#job-detail", rf"Job {jobs['carol']}\b.*succeeded")
    assert selected_tab(other) == "Jobs"

    # a URL naming another organisation's job shows nothing of it, as for a missing job
    other.goto(f"{dashboard.url}?tab=jobs&job={jobs['dave']}")
    detail = wait_text(other, "#job-detail", r"not found")
    assert "selftest" not in detail and "dave" not in detail, detail
    # ... and a member's URL naming the admin tab (or nothing known) opens the first tab
    for query in ("?tab=admin", "?tab=nonsense"):
        other.goto(dashboard.url + query)
        wait_text(other, "#whoami", r"carol · hooli")
        other.wait_for_timeout(1500)  # the page's load events have run
        assert selected_tab(other) == "Upload", query
        assert other.get_by_role("tab", name="Admin", exact=True).count() == 0
    other.close()


def test_forms_reset_stale_values_and_clear_old_messages(carol, tmp_path, shots):
    from ui.service import USER_FORMAT

    ctx, page, _ = carol
    page.goto(page.url.split("?")[0])
    wait_text(page, "#whoami", r"carol · hooli")
    gsm = tmp_path / "gsm_style.jsonl"  # GSM8K's published layout: question, answer ending '#### n'
    gsm.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys {i} more. How many?",
                                       "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}) + "\n" for i in range(1, 9)))
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"prompt": f"What is {i} times 3? " + "Explain briefly. " * 12,
                                         "answer": str(3 * i)}) + "\n" for i in range(8)))

    upload_files(page, "#dataset-file", [gsm])
    page.locator("#dataset-format input").click()
    page.get_by_role("option", name="gsm8k", exact=True).click()
    fill(page, "dataset-name", "gsm-style")
    fill(page, "dataset-budget", "4")
    page.locator("#dataset-upload").click()
    msg = wait_text(page, "#dataset-status", r"dataset 'gsm-style' stored")
    assert "reset for the next file" in msg and USER_FORMAT in msg and "budget and δ are kept" in msg, msg
    page.wait_for_function("(v) => document.querySelector('#dataset-format input').value === v", arg=USER_FORMAT,
                           timeout=EVENT_TIMEOUT_MS)
    assert page.locator("#dataset-name textarea, #dataset-name input").first.input_value() == ""
    assert page.locator("#dataset-budget input").first.input_value() == "4"  # privacy settings stay

    # a new file: the last file's message goes; the next prompt/answer file is accepted as it is
    upload_files(page, "#dataset-file", [plain])
    page.wait_for_function("() => !document.querySelector('#dataset-status').innerText.trim()",
                           timeout=EVENT_TIMEOUT_MS)
    page.locator("#dataset-upload").click()
    wait_text(page, "#dataset-status", r"dataset 'plain' stored \(id \d+\): 8 examples")
    wait_text(page, "#dataset-preview", r"What is 0 times 3\?")

    # the preview's header row is one line, and the answer column is on screen
    header = page.locator("#dataset-preview thead tr").first.bounding_box()
    answer = page.locator("#dataset-preview thead th", has_text="answer").first.bounding_box()
    width = page.viewport_size["width"]
    shot(page, shots, "13-upload-form-reset")
    assert header["height"] <= 60, header
    assert answer["x"] + answer["width"] <= width, (answer, width)

    # an old ✖ on the Fine-tune tab is gone when the user comes back to the tab
    tab(page, "Fine-tune")
    fill(page, "ft-steps", "0")
    page.locator("#ft-start").click()
    wait_text(page, "#ft-status", r"✖")
    tab(page, "Jobs")
    tab(page, "Fine-tune")
    page.wait_for_function("() => !document.querySelector('#ft-status').innerText.trim()", timeout=EVENT_TIMEOUT_MS)
    assert re.search(r"tab=finetune", page.url), page.url


def test_a_form_shows_its_command_and_keeps_saved_settings_across_a_reload(carol, shots):
    ctx, page, _ = carol
    page.goto(page.url.split("?")[0] + "?tab=finetune")
    wait_text(page, "#whoami", r"carol · hooli")
    page.wait_for_function("() => document.querySelector('#tabs button[role=tab][aria-selected=true]')"
                           ".innerText.trim() === 'Fine-tune'", timeout=EVENT_TIMEOUT_MS)
    fill(page, "ft-steps", "37")
    fill(page, "ft-lr", "0.02")
    page.locator("#ft-save").click()
    wait_text(page, "#ft-status", r"settings saved in this browser: steps=37")
    page.get_by_text("The same from the command line").first.click()
    page.locator("#ft-cli").click()
    command = wait_text(page, "#ft-cli-command", r"gtapp jobs submit finetune")
    assert '"steps": 37' in command and '"lr": 0.02' in command and "--wait" in command, command

    page.reload()
    wait_text(page, "#whoami", r"carol · hooli")
    steps = page.locator("#ft-steps input").first
    page.wait_for_function("() => document.querySelector('#ft-steps input').value === '100'",
                           timeout=EVENT_TIMEOUT_MS)  # a fresh form has the defaults ...
    page.locator("#ft-restore").click()
    wait_text(page, "#ft-status", r"saved settings loaded: steps=37")
    assert steps.input_value() == "37" and page.locator("#ft-lr input").first.input_value() == "0.02"
    shot(page, shots, "14-finetune-saved-settings")
