"""The audit console in a real browser: users created through user-service
appear live, a filter narrows the list, an event opens with its attributes,
pause and resume, a bearer token asked for on 401, event data that is
never run as HTML, a dry-run replay of the applied filter, and each event's inclusion in the transparency log checked
in the browser. Screenshots go to SCREENSHOTS_DIR (see conftest.py)."""

import json
import re
import uuid

from playwright.sync_api import expect

from conftest import ADMIN_TOKEN, request, screenshots_dir, wait_for

TIMEOUT_MS = 20_000


def open_console(browser, services):
    """A new page on the console, once it has drawn the stored events it replays."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(services.console)
    expect(page.locator("#status")).to_have_text(re.compile("^Live"))
    expect(rows(page)).to_have_count(min(services.count(), 500))
    return page


def rows(page):
    return page.locator("#events li")


def row_for(page, subject):
    return page.locator("#events li", has=page.locator(".subject", has_text=subject))


def test_created_users_appear_live(services, browser):
    page = open_console(browser, services)
    names = [f"Live {uuid.uuid4().hex[:6]}" for _ in range(3)]
    ids = [services.create_user(name) for name in names]
    for uid in ids:
        expect(row_for(page, uid)).to_have_count(1)
    first = row_for(page, ids[0])
    expect(first.locator(".type")).to_have_text("user.storeUser")
    expect(first.locator(".transport")).to_have_text("http")
    # Beside each id, what it is about: a user event's name.
    for uid, name in zip(ids, names):
        expect(row_for(page, uid).locator(".summary")).to_have_text(name)
    # Newest first.
    assert rows(page).first.get_attribute("data-seq") == row_for(page, ids[-1]).get_attribute("data-seq")
    expect(page.locator("#legend")).to_contain_text("user.storeUser")
    assert page.locator("#chart svg rect").count() >= 1
    assert not browser.errors, browser.errors


def test_a_filter_is_checked_as_typed_and_shows_only_matching_events(services, browser):
    kept = services.create_user(f"Kept {uuid.uuid4().hex[:6]}")
    services.rename_user(kept, "Kept, renamed")
    other = services.create_user(f"Other {uuid.uuid4().hex[:6]}")
    page = open_console(browser, services)
    expect(row_for(page, other)).to_have_count(1)
    expect(row_for(page, kept)).to_have_count(2)

    box = page.locator("#filter")
    # A mistake is pointed at while typing, before anything is applied.
    box.press_sequentially("subject = ", delay=5)
    expect(page.locator("#filter-message")).to_contain_text("not a valid CESQL expression")
    expect(box).to_have_attribute("aria-invalid", "true")
    pointer = page.locator("#filter-pointer")
    expect(pointer).to_be_visible()
    # The caret under the column the service named: the end of the text.
    assert pointer.text_content() == "subject = \n" + " " * 10 + "^", repr(pointer.text_content())
    page.screenshot(path=str(screenshots_dir() / "console-filter-error.png"))
    # Fixed, evaluated in the service (LIKE), applied with Enter.
    box.press_sequentially(f"'{kept}' AND type LIKE 'user.%'", delay=2)
    expect(page.locator("#filter-message")).to_have_text("Valid. Press Enter to apply.")
    expect(box).not_to_have_attribute("aria-invalid", "true")
    box.press("Enter")
    expect(page.locator("#status")).to_have_text("Live, filtered")
    expect(rows(page)).to_have_count(2)
    expect(page.locator("#events .subject")).to_have_text([kept, kept])
    expect(page.locator("#events .type")).to_have_text(["user.updateUser", "user.storeUser"])
    # The filter is kept in the address.
    assert "filter=" in page.url

    # Live events go through the same filter.
    services.rename_user(other, "Other, renamed")
    services.rename_user(kept, "Kept, renamed again")
    expect(rows(page)).to_have_count(3)
    expect(row_for(page, other)).to_have_count(0)

    # An empty filter shows everything again.
    box.fill("")
    box.press("Enter")
    expect(row_for(page, other)).to_have_count(2)
    assert not browser.errors, browser.errors


def test_a_filter_naming_an_attribute_no_event_has_shows_a_hint(services, browser):
    services.create_user(f"Hint {uuid.uuid4().hex[:6]}")
    page = open_console(browser, services)
    box = page.locator("#filter")
    hint = page.locator("#filter-hint")
    expect(hint).to_be_hidden()
    # Valid CESQL that matches nothing: a typo of `subject`.
    box.press_sequentially("subjekt = 'x'", delay=5)
    expect(page.locator("#filter-message")).to_have_text("Valid. Press Enter to apply.")
    expect(hint).to_be_visible()
    expect(hint).to_have_text("No stored event has the attribute `subjekt`; did you mean `subject`?")
    box.fill("")
    box.press_sequentially("subject = 'x'", delay=5)
    expect(page.locator("#filter-message")).to_have_text("Valid. Press Enter to apply.")
    expect(hint).to_be_hidden()
    assert not browser.errors, browser.errors


def test_an_event_opens_with_all_its_attributes_from_the_keyboard(services, browser):
    name = f"Detail {uuid.uuid4().hex[:6]}"
    uid = services.create_user(name)
    page = open_console(browser, services)
    expect(row_for(page, uid)).to_have_count(1)
    # Tab into the list (one tab stop), arrow to the row, Enter to open it.
    page.locator("#events button").first.focus()
    buttons = page.locator("#events button")
    target = next(i for i in range(buttons.count()) if uid in buttons.nth(i).inner_text())
    for _ in range(target):
        page.keyboard.press("ArrowDown")
    expect(row_for(page, uid).locator("button")).to_be_focused()
    page.keyboard.press("Enter")

    stored = services.stored(uid)[0]
    expect(page.locator("#detail-title")).to_have_text(f"Event {stored['seq']}")
    attributes = dict(zip(
        page.locator("#attributes dt").all_inner_texts(),
        page.locator("#attributes dd").all_inner_texts(),
    ))
    event = stored["event"]
    for key in ["specversion", "id", "source", "type", "subject", "time", "datacontenttype"]:
        assert attributes[key] == event[key], (key, attributes)
    assert attributes["transport (audit)"] == "http"
    # Extensions too, whatever they are.
    for key in set(event) - {"data", "data_base64"}:
        assert attributes[key] == (event[key] if isinstance(event[key], str) else json.dumps(event[key])), key
    data = page.locator("#data").inner_text()
    assert json.loads(data) == {"id": uid, "name": name}
    assert "\n  " in data, "pretty-printed"
    assert "correct horse" not in page.content()
    expect(row_for(page, uid).locator("button")).to_have_attribute("aria-current", "true")
    page.screenshot(path=str(screenshots_dir() / "console-detail.png"))
    assert not browser.errors, browser.errors


def test_pause_counts_what_arrives_and_resume_shows_it(services, browser):
    page = open_console(browser, services)
    before = rows(page).count()
    page.locator("#pause").click()
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    ids = [services.create_user(f"Paused {i}") for i in range(3)]
    expect(page.locator("#missed")).to_have_text("3 new events while paused")
    assert rows(page).count() == before
    for uid in ids:
        expect(row_for(page, uid)).to_have_count(0)
    page.locator("#pause").click()
    for uid in ids:
        expect(row_for(page, uid)).to_have_count(1)
    expect(page.locator("#missed")).to_have_text("")
    expect(rows(page)).to_have_count(before + 3)
    assert not browser.errors, browser.errors


def test_a_401_asks_for_a_token_and_every_request_then_carries_it(services, browser):
    # The service has no auth yet: the browser's network layer plays it, letting
    # through only requests with the token.
    seen = []

    def guard(route):
        auth = route.request.headers.get("authorization")
        seen.append((route.request.url, auth))
        if auth == "Bearer s3cret-token":
            route.continue_()
        else:
            route.fulfill(status=401, content_type="application/problem+json",
                          body=json.dumps({"type": "about:blank", "title": "Unauthorized", "status": 401,
                                           "detail": "a bearer token is required"}))

    browser.route(re.compile(r".*/v1/.*"), guard)
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(services.console)
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#token")).to_be_focused()
    page.locator("#token").fill("s3cret-token")
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#status")).to_have_text(re.compile("^Live"))
    uid = services.create_user("Behind a token")
    expect(row_for(page, uid)).to_have_count(1)
    page.locator("#filter").fill("type = 'user.storeUser'")
    expect(page.locator("#filter-message")).to_have_text("Valid. Press Enter to apply.")
    after_prompt = seen[1:]
    assert after_prompt and all(auth == "Bearer s3cret-token" for _, auth in after_prompt), seen
    assert any("/v1/filters/validate" in url for url, _ in after_prompt), seen
    assert all("s3cret" not in url for url, _ in seen), "the token stays out of URLs"
    assert not browser.errors, browser.errors


def test_a_dry_run_of_the_applied_filter_is_started_and_listed(services, browser):
    kept = services.create_user(f"Replayed {uuid.uuid4().hex[:6]}")
    services.rename_user(kept, "Replayed, renamed")
    page = open_console(browser, services)
    box = page.locator("#filter")
    box.fill(f"subject = '{kept}'")
    box.press("Enter")
    expect(page.locator("#status")).to_have_text("Live, filtered")

    page.locator("#admin-token").fill(ADMIN_TOKEN)
    page.locator("#dry-run").click()
    expect(page.locator("#replay-message")).to_contain_text("Dry run")
    newest = page.locator("#replay-rows tr").first
    # The list refreshes until the dry run is done: it counted the two
    # events of that user, and sent nothing.
    expect(newest).to_contain_text("done (dry run)")
    expect(newest).to_contain_text(f"subject = '{kept}'")
    expect(newest.locator("td.number").first).to_have_text("2")
    page.screenshot(path=str(screenshots_dir() / "console-replays.png"))
    assert not browser.errors, browser.errors


def test_event_data_is_shown_as_text_never_run(services, browser):
    hostile = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    subject = f"<b>bold-{uuid.uuid4().hex[:6]}</b>"
    services.post_event({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/attacker",
        "type": "<i>evil.type</i>", "subject": subject, "hostile": "<svg onload=alert(1)>",
        "datacontenttype": "application/json", "data": {"html": hostile},
    })
    page = open_console(browser, services)
    row = row_for(page, subject)
    expect(row).to_have_count(1)
    # The data's summary in the list is text too.
    expect(row.locator(".summary")).to_contain_text('html: <img src=x onerror=')
    row.locator("button").click()
    expect(page.locator("#data")).to_contain_text(hostile.replace('"', '\\"'))
    expect(page.locator("#attributes")).to_contain_text("<svg onload=alert(1)>")
    assert page.locator("#events b, #events i, main img, main script, #attributes svg").count() == 0
    assert page.title() == "Audit console"
    assert not browser.errors, browser.errors


def test_the_console_fits_a_phone(services, browser):
    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(services.console)
    expect(page.locator("#status")).to_have_text(re.compile("^Live"))
    uid = services.create_user("Phone")
    expect(row_for(page, uid)).to_have_count(1)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    row_for(page, uid).locator("button").click()
    expect(page.locator("#detail")).to_be_focused()
    expect(page.locator("#back")).to_be_visible()
    page.screenshot(path=str(screenshots_dir() / "console-phone.png"))
    page.locator("#back").click()
    expect(row_for(page, uid).locator("button")).to_be_focused()
    assert not browser.errors, browser.errors


def open_event(page, uid):
    expect(row_for(page, uid)).to_have_count(1)
    row_for(page, uid).locator("button").click()


def test_an_events_inclusion_proof_is_checked_in_the_browser(services, browser):
    uid = services.create_user(f"Proof {uuid.uuid4().hex[:6]}")
    seq = services.stored(uid)[0]["seq"]
    # Once the event is in a signed checkpoint (within a second).
    wait_for(lambda: "log" in services.stored(uid)[0], 20, "the event's leaf")
    page = open_console(browser, services)
    open_event(page, uid)
    proof = page.locator("#proof")
    expect(proof).to_have_attribute("data-kind", "ok")
    expect(proof).to_contain_text(re.compile(
        r"^Verified in this browser: leaf \d+ of the checkpoint of \d+ events, signed \d+ s ago "
        r"\(console\.test/audit\); its data matches its commitment\.$"))
    page.locator("#detail").screenshot(path=str(screenshots_dir() / "console-proof.png"))
    status, _, body = request("GET", f"{services.audit.base}/log/checkpoint")
    assert status == 200 and body.split("\n")[0] == "console.test/audit"
    assert seq >= 1

    # Erased: no data, and still in the tree.
    status, _, body = request("DELETE", f"{services.audit.base}/v1/subjects/{uid}/data",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 200 and body["erased"] == 1, (status, body)
    page.reload()
    expect(page.locator("#status")).to_have_text(re.compile("^Live"))
    open_event(page, uid)
    expect(proof).to_have_attribute("data-kind", "ok")
    expect(proof).to_contain_text("its data was erased")
    expect(page.locator("#data")).to_have_text("(no data)")
    assert not browser.errors, browser.errors
