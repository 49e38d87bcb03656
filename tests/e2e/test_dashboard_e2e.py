"""The dashboard end to end in a real browser, against ``python app.py`` (SQLite, embedded
worker, the micro zoo as its model pair): sign in; create a user (admin); upload a TinyLM
adapter and a malformed one; upload a dataset; fine-tune on it and watch the progress bar
reach done; a DP job over the dataset's budget is refused; a second organisation cannot see
or fetch the first's adapter, through the page and through the HTTP/event API; the Compare
charts render from a results JSON; an adapter downloads and loads in peft. Screenshots of
every page go to test-artifacts/screenshots/."""

from __future__ import annotations

import json
import pickle
import re
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a live app.py and Chromium: about 55 s for the module

STATE: dict = {}
SHADOW = {"tasks": ["math/add-fruit-easy"], "subsets": 3, "subset_size": 16, "steps": 6, "snapshot_steps": [3],
          "n_train": 64, "batch_size": 4}
EVENT_TIMEOUT_MS = 60_000


# ---------------------------------------------------------------------------------- helpers


def sign_in(browser, dashboard, username: str, password: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(dashboard.url)
    assert page.url.endswith("/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#sign-in")
    page.wait_for_selector("#whoami :text('" + username + "')", timeout=EVENT_TIMEOUT_MS)
    return ctx, page


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(600)


def wait_text(page, selector: str, pattern: str, timeout_ms: int = EVENT_TIMEOUT_MS) -> str:
    loc = page.locator(selector)
    deadline = time.monotonic() + timeout_ms / 1000
    text = ""
    while time.monotonic() < deadline:
        text = loc.inner_text() if loc.count() else ""
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"{selector}: {pattern!r} not found in {text!r}")


def fill(page, elem_id: str, value: str) -> None:
    """Type into a Gradio textbox / number (a textarea or an input inside the component)."""
    page.locator(f"#{elem_id}").locator("textarea, input:not([type=checkbox]):not([type=file])").first.fill(value)


def upload_files(page, selector: str, paths) -> None:
    page.locator(f"{selector} input[type=file]").set_input_files([str(p) for p in paths])
    # Gradio uploads on change; wait until the files are listed
    for p in paths:
        page.locator(selector).get_by_text(Path(p).stem, exact=True).first.wait_for(timeout=EVENT_TIMEOUT_MS)


def plot_traces(page, elem_id: str, names=None, timeout_ms: int = EVENT_TIMEOUT_MS) -> list[dict]:
    """The Plotly traces drawn in a gr.Plot (read from the page's plotly div), once they
    include ``names`` (if given)."""
    js = f"""() => {{ const d = document.querySelector('#{elem_id} .js-plotly-plot');
        return d && d.data ? d.data.map(t => ({{name: t.name, x: Array.from(t.x || []),
                                                 y: Array.from(t.y || [])}})) : null; }}"""
    deadline = time.monotonic() + timeout_ms / 1000
    traces = None
    while time.monotonic() < deadline:
        traces = page.evaluate(js)
        if traces and (names is None or set(names) <= {t["name"] for t in traces}):
            return traces
        page.wait_for_timeout(250)
    raise AssertionError(f"#{elem_id}: no plotly traces {names or ''} (got {traces})")


def shot(page, shots: Path, name: str) -> None:
    page.wait_for_timeout(400)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def gradio_call(request_ctx, url: str, api_name: str, data: list) -> str:
    """Call a dashboard event through Gradio's HTTP API with this context's session cookie."""
    r = request_ctx.post(f"{url}gradio_api/call/{api_name}", data=json.dumps({"data": data}),
                         headers={"content-type": "application/json"})
    assert r.status == 200, r.text()
    event_id = r.json()["event_id"]
    return request_ctx.get(f"{url}gradio_api/call/{api_name}/{event_id}").text()


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_adapter(e2e_zoo, tmp_path_factory) -> dict:
    """A TinyLM adapter of the micro zoo: seeded LoRA init, B perturbed, save_pretrained."""
    import torch

    from gtapp.lora.peft_model import attach_lora
    from gtapp.models import ModelPair, load_model

    pair = ModelPair.from_dir(e2e_zoo / "micro")
    peft_model = attach_lora(load_model(pair.tiny_path), pair.recipes.tiny)
    g = torch.Generator().manual_seed(7)
    b = {}
    with torch.no_grad():
        for name, mod in peft_model.named_modules():
            if hasattr(mod, "lora_B") and "default" in getattr(mod, "lora_B", {}):
                w = mod.lora_B["default"].weight
                w.copy_(0.05 * torch.randn(w.shape, generator=g))
                b[name] = w.detach().clone()
    out = tmp_path_factory.mktemp("tiny_adapter") / "adapter"
    peft_model.save_pretrained(str(out))
    bad = tmp_path_factory.mktemp("bad_adapter")
    (bad / "adapter_config.json").write_bytes((out / "adapter_config.json").read_bytes())
    (bad / "adapter_model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    return {"dir": out, "bad": bad, "b": b, "tiny_path": pair.tiny_path}


@pytest.fixture(scope="module")
def admin_page(browser, dashboard):
    ctx, page = sign_in(browser, dashboard, "admin", dashboard.admin_password)
    yield page
    ctx.close()


@pytest.fixture(scope="module")
def alice_page(browser, dashboard, admin_page):
    ctx, page = sign_in(browser, dashboard, "alice", "alice-password")
    yield page
    ctx.close()


@pytest.fixture(scope="module")
def bob_ctx(browser, dashboard, admin_page):
    from storage import accounts
    from storage.db import session_scope
    from storage.settings import Settings

    settings = Settings(data_dir=dashboard.data_dir, _env_file=None)
    with session_scope(settings=settings) as s:  # a second organisation, made straight in the database
        accounts.create_user(s, "globex", "bob", "bob-password", "member")
    ctx, page = sign_in(browser, dashboard, "bob", "bob-password")
    yield ctx, page
    ctx.close()


# ---------------------------------------------------------------------------------- tests


def test_sign_in_and_admin_creates_an_organisation_user(browser, dashboard, admin_page, shots):
    page = admin_page
    # a wrong password is refused on the sign-in page
    ctx = browser.new_context()
    p2 = ctx.new_page()
    p2.goto(dashboard.url + "login")
    p2.fill("#username", "admin")
    p2.fill("#password", "not-the-password")
    p2.click("#sign-in")
    assert "Wrong username or password" in p2.locator("#login-error").inner_text()
    p2.screenshot(path=str(shots / "00-sign-in.png"))
    ctx.close()

    tab(page, "Admin")
    wait_text(page, "#admin-pairs", r"micro")  # the configured zoo was registered at start
    fill(page, "admin-org", "acme")
    fill(page, "admin-username", "alice")
    fill(page, "admin-password", "alice-password")
    page.locator("#admin-create-user").click()
    wait_text(page, "#admin-user-status", r"user 'alice' \(member\) created in organisation 'acme'")
    wait_text(page, "#admin-users", r"alice")
    # shadow-pair generation on the micro pair, small (it runs while the organisation works)
    fill(page, "admin-shadow-extra", json.dumps(SHADOW))
    page.locator("#admin-shadow").click()
    msg = wait_text(page, "#admin-job-status", r"✔|✖")
    assert "shadow job" in msg, msg
    STATE["shadow_job"] = int(re.search(r"shadow job (\d+)", msg).group(1))


def test_upload_adapter_and_a_malformed_one(alice_page, dashboard, tiny_adapter, shots):
    page = alice_page
    wait_text(page, "#whoami", r"alice · acme · member")
    assert page.get_by_role("tab", name="Admin", exact=True).count() == 0  # members have no Admin tab
    upload_files(page, "#adapter-files", [tiny_adapter["dir"] / "adapter_config.json",
                                          tiny_adapter["dir"] / "adapter_model.safetensors"])
    fill(page, "adapter-name", "acme-tiny")
    page.locator("#adapter-upload").click()
    status = wait_text(page, "#adapter-status", r"adapter 'acme-tiny' stored \(id \d+\)")
    STATE["adapter_id"] = int(re.search(r"id (\d+)", status).group(1))
    summary = wait_text(page, "#adapter-summary", r"LoRA modules")
    assert "rank / alpha" in summary and "matches the pair's TinyLM recipe" in summary
    (norms,) = plot_traces(page, "adapter-norms")
    assert norms["x"] == ["layer 0", "layer 1"] and all(v > 0 for v in norms["y"])  # micro TinyLM: 2 layers
    wait_text(page, "#my-adapters", r"acme-tiny")
    shot(page, shots, "01-upload-adapter")
    # the same adapter's summary through the event API, as its owner
    out = gradio_call(page.context.request, dashboard.url, "adapter_details", [STATE["adapter_id"]])
    assert f"adapter {STATE['adapter_id']} of organisation acme" in out, out

    upload_files(page, "#adapter-files", [tiny_adapter["bad"] / "adapter_config.json",
                                          tiny_adapter["bad"] / "adapter_model.safetensors"])
    page.locator("#adapter-upload").click()
    err = wait_text(page, "#adapter-status", r"✖")
    assert "pickle" in err, err
    shot(page, shots, "02-upload-malformed-adapter")


def test_upload_dataset_and_fine_tune_to_done(alice_page, tmp_path_factory, shots):
    page = alice_page
    src = tmp_path_factory.mktemp("ds") / "sums.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n"
                           for i in range(24)))
    upload_files(page, "#dataset-file", [src])
    fill(page, "dataset-budget", "1")
    page.locator("#dataset-upload").click()
    wait_text(page, "#dataset-status", r"dataset 'sums' stored \(id \d+\): 24 examples")
    wait_text(page, "#dataset-preview", r"What is 0 plus 0\?")
    shot(page, shots, "03-upload-dataset")

    tab(page, "Fine-tune")
    wait_text(page, "#ft-ledger", r"budget ε=1")
    fill(page, "ft-steps", "12")
    fill(page, "ft-lr", "0.01")
    fill(page, "ft-name", "acme-ft")
    # a fine-tune without DP on a dataset with a privacy budget is refused, saying what to do
    page.locator("#ft-start").click()
    refused = wait_text(page, "#ft-status", r"✖")
    assert "without DP would void it" in refused and "no DP required" in refused, refused
    # a DP job asking more than the dataset's budget is refused, saying why
    page.locator("#ft-dp input[type=checkbox]").check()
    fill(page, "ft-epsilon", "5")
    page.locator("#ft-start").click()
    refused = wait_text(page, "#ft-status", r"privacy budget exceeded")
    assert "budget ε=1" in refused, refused
    # within the budget it is queued
    fill(page, "ft-epsilon", "1")
    page.locator("#ft-start").click()
    status = wait_text(page, "#ft-status", r"fine-tune job \d+ queued")
    STATE["ft_job"] = int(re.search(r"job (\d+)", status).group(1))
    shot(page, shots, "04-finetune")

    tab(page, "Jobs")
    row = f"#jobs-table tr[data-job-id='{STATE['ft_job']}']"
    page.wait_for_selector(row, timeout=EVENT_TIMEOUT_MS)
    page.wait_for_selector(f"{row}[data-status='succeeded']", timeout=150_000)
    assert page.locator(f"{row} [role=progressbar]").get_attribute("aria-valuenow") == "100"
    assert "alice" in page.locator(row).inner_text()
    fill(page, "job-id", str(STATE["ft_job"]))
    page.locator("#job-show").click()
    wait_text(page, "#job-detail", r"succeeded")
    shot(page, shots, "05-jobs")


def wait_job(page, job_id: int, timeout_ms: int = 240_000) -> None:
    tab(page, "Jobs")
    row = f"#jobs-table tr[data-job-id='{job_id}']"
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        status = page.locator(row).get_attribute("data-status") if page.locator(row).count() else None
        if status == "succeeded":
            return
        if status in ("failed", "cancelled"):
            fill(page, "job-id", str(job_id))
            page.locator("#job-show").click()
            raise AssertionError(f"job {job_id} {status}: {wait_text(page, '#job-detail', str(job_id))}")
        page.wait_for_timeout(500)
    raise AssertionError(f"job {job_id} not done in {timeout_ms / 1000:g}s")


def test_admin_trains_and_promotes_a_mapper(admin_page, shots):
    page = admin_page
    wait_job(page, STATE["shadow_job"])
    tab(page, "Admin")
    page.locator("#admin-refresh").click()
    wait_text(page, "#admin-pair-sets", r"shadow-micro")
    page.locator("#admin-train-kind input").click()
    page.get_by_role("option", name="mean", exact=True).click()
    page.get_by_label("Promote when trained").check()
    page.locator("#admin-train").click()
    msg = wait_text(page, "#admin-job-status", r"train_mapper job \d+ queued")
    wait_job(page, int(re.search(r"job (\d+)", msg).group(1)))
    tab(page, "Admin")
    page.locator("#admin-refresh").click()
    wait_text(page, "#admin-mappers", r"mean")
    assert "yes" in page.locator("#admin-mappers").inner_text()  # promoted
    shot(page, shots, "07-admin")


def test_generate_an_llm_adapter_and_downloads_load_in_peft(alice_page, tiny_adapter, e2e_zoo, tmp_path_factory,
                                                             shots):
    page = alice_page
    tab(page, "Generate")
    page.locator("#gen-adapters").get_by_text("acme-tiny").first.click()
    wait_text(page, "#gen-contrib", r"acme-tiny")  # each contributor with its weight and privacy spend
    fill(page, "gen-name", "acme-llm")
    fill(page, "gen-n-test", "16")
    page.locator("#gen-start").click()
    msg = wait_text(page, "#gen-status", r"generate job \d+ queued")
    wait_job(page, int(re.search(r"job (\d+)", msg).group(1)))
    tab(page, "Generate")
    page.locator("#gen-refresh").click()
    text = wait_text(page, "#gen-downloads", r"LLM adapter \d+: acme-llm")
    assert "acme-tiny" in text and "acme-ft" in text and "mapper v1 mean" in text
    # its result: the gain over the base LLM and over the mean baseline, in words and as a chart
    wait_text(page, "#gen-results", r"gain over the base LLM: .*answer NLL")
    bars = plot_traces(page, "gen-gains", ["over the base LLM", "over the provider's mean baseline"])
    assert all(len(b["x"]) == 1 and "acme-llm" in b["x"][0] for b in bars), bars
    shot(page, shots, "06-generate")

    import torch
    from peft import PeftModel

    from gtapp.models import load_model

    def download(adapter_id: int) -> Path:
        with page.expect_download() as dl:
            page.locator(f"#gen-downloads a[data-adapter-id='{adapter_id}']").click()
        out = tmp_path_factory.mktemp("download")
        zpath = out / dl.value.suggested_filename
        dl.value.save_as(zpath)
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(out / "adapter")
        return out / "adapter"

    # the generated LLM adapter is a stock peft folder for the pair's LLM
    llm_id = int(re.search(r"LLM adapter (\d+): acme-llm", text).group(1))
    llm_dir = download(llm_id)
    llm = PeftModel.from_pretrained(load_model(e2e_zoo / "micro" / "llm"), str(llm_dir))
    assert any("lora_B" in n for n, _ in llm.named_parameters())
    # its config names the model pair, never a server path
    config = json.loads((llm_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "gtapp:micro:llm" and config.get("revision") is None, config
    # and the uploaded TinyLM adapter comes back exactly as uploaded
    model = PeftModel.from_pretrained(load_model(tiny_adapter["tiny_path"]), str(download(STATE["adapter_id"])))
    got = {n: m.lora_B["default"].weight for n, m in model.named_modules()
           if hasattr(m, "lora_B") and "default" in getattr(m, "lora_B", {})}
    assert set(got) == set(tiny_adapter["b"]) and all(torch.equal(got[k], tiny_adapter["b"][k]) for k in got)


def test_second_organisation_cannot_see_or_fetch_it(bob_ctx, dashboard, shots):
    ctx, page = bob_ctx
    aid = STATE["adapter_id"]
    wait_text(page, "#whoami", r"bob · globex")
    wait_text(page, "#my-adapters", r"organisation")  # the table rendered ...
    assert "acme" not in page.locator("#my-adapters").inner_text()  # ... without acme's adapter
    assert "sums" not in page.locator("#my-datasets").inner_text()
    tab(page, "Generate")
    wait_text(page, "#gen-downloads", r"No adapters yet")
    tab(page, "Compare")
    wait_text(page, "#cmp-info", r"No results here yet")  # the empty state: acme's evaluation is not shown
    tab(page, "Jobs")
    wait_text(page, "#jobs-html", r"No jobs yet")
    shot(page, shots, "08-second-organisation")

    # the same through the API, with bob's session cookie
    r = ctx.request.get(f"{dashboard.url}download/adapter/{aid}")
    assert r.status == 404 and "not found" in r.json()["error"]
    assert "not found" in gradio_call(ctx.request, dashboard.url, "job_detail", [STATE["ft_job"]])
    out = gradio_call(ctx.request, dashboard.url, "adapter_details", [aid])
    assert f"adapter {aid} not found" in out and "acme-tiny" not in out, out
    for api in ("cancel_job", "retry_job"):
        assert f"job {STATE['ft_job']} not found" in gradio_call(ctx.request, dashboard.url, api, [STATE["ft_job"]])
    # and without any session, nothing at all
    anon = ctx.browser.new_context()
    assert anon.request.get(f"{dashboard.url}download/adapter/{aid}").status == 401
    assert anon.request.post(f"{dashboard.url}gradio_api/call/job_detail", data='{"data": [1]}',
                             headers={"content-type": "application/json"}).status == 401
    anon.close()


def test_compare_charts_render_from_a_results_json(alice_page, tmp_path_factory, shots):
    page = alice_page
    tab(page, "Compare")
    # the organisation's own evaluation rows (the generated adapter's) are charted first
    wait_text(page, "#cmp-info", r"1 of 1 rows from evaluations")
    assert {t["name"] for t in plot_traces(page, "cmp-metric", ["mean_shadow"])} == {"mean_shadow"}
    rows = []
    for task, base, oracle in (("math/add-fruit-easy", 0.2, 0.8), ("csqa/animals", 0.3, 0.7)):
        for method, v in (("base_llm", base), ("oracle", oracle), ("gt", base + 0.6 * (oracle - base)),
                          ("ridge", base + 0.2 * (oracle - base))):
            for eps in (None, 1.0, 8.0):
                rows.append({"protocol": "in_distribution", "task": task, "method": method, "dp_epsilon": eps,
                             "clients": 1, "seed": 0, "metric": "exact_match", "value": v,
                             "gap_recovery": (v - base) / (oracle - base), "wall_s": 3.0, "peak_mem_mb": 120.0})
    path = tmp_path_factory.mktemp("bench") / "results.json"
    path.write_text(json.dumps({"rows": rows}))
    page.get_by_role("button", name="Load a benchmark results JSON").click()
    upload_files(page, "#cmp-upload", [path])
    page.locator("#cmp-load").click()
    wait_text(page, "#cmp-upload-status", r"24 result rows loaded")
    wait_text(page, "#cmp-info", r"24 of 24 rows")
    by = {t["name"]: t for t in plot_traces(page, "cmp-metric", ["base_llm", "oracle", "gt", "ridge"])}
    assert set(by) == {"base_llm", "oracle", "gt", "ridge"}
    assert by["gt"]["x"] == ["csqa/animals", "math/add-fruit-easy"]
    assert by["gt"]["y"] == pytest.approx([0.54, 0.56])
    gap = {t["name"]: t for t in plot_traces(page, "cmp-gap", ["gt"])}
    assert gap["gt"]["y"] == pytest.approx([0.6, 0.6]) and gap["oracle"]["y"] == pytest.approx([1.0, 1.0])
    assert plot_traces(page, "cmp-epsilon", ["gt"])[0]["x"] == ["1", "8", "no DP"]
    assert {t["name"] for t in plot_traces(page, "cmp-clients", ["1 client"])} == {"1 client"}
    assert [t["name"] for t in plot_traces(page, "cmp-cost", ["wall_s"])] == ["wall_s", "peak_mem_mb"]
    shot(page, shots, "09-compare")
    # the filtered table downloads as CSV
    page.locator("button.label-wrap", has_text=re.compile(r"^\s*Table")).click()
    with page.expect_download() as dl:
        page.locator("#cmp-csv-link").click()
    assert dl.value.path().read_text().splitlines()[0].startswith("protocol,task,method")


def test_account_page(alice_page, shots):
    tab(alice_page, "Account")
    wait_text(alice_page, "#account-info", r"organisation \*?\*?acme")
    shot(alice_page, shots, "10-account")


def test_jobs_survive_a_server_restart(alice_page, dashboard, shots):
    """The Jobs table reads the database, and the session is signed with a persistent key:
    after a restart the same browser session still sees its finished job."""
    from playwright.sync_api import Error as PlaywrightError

    dashboard.stop()
    dashboard.start()
    page = alice_page
    # the page's own client may navigate as the server comes back; a reload racing with it is
    # aborted (net::ERR_ABORTED), which says nothing about the dashboard: reload again
    for attempt in range(3):
        try:
            page.reload()
            break
        except PlaywrightError as e:
            if "ERR_ABORTED" not in str(e) or attempt == 2:
                raise
            page.wait_for_timeout(500)
    wait_text(page, "#whoami", r"alice · acme")
    tab(page, "Jobs")
    page.wait_for_selector(f"#jobs-table tr[data-job-id='{STATE['ft_job']}'][data-status='succeeded']",
                           timeout=EVENT_TIMEOUT_MS)
    shot(page, shots, "11-jobs-after-restart")
