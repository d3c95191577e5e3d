"""The web UI driven in a real browser: headless Chromium through WebDriver (Selenium and
Debian's chromedriver), as tests/ui.rs's `a_browser_navigates_searches_pages_logs_in_deletes_and_logs_out`
sets it up. Each step asserts what the page shows; the last line printed is JSON with what the
Rust test checks further (the pull command copied from the page).

Usage: ui_journey.py <base-url> <screenshot-dir>
Environment: BERTH_UI_ADMIN="user:password", BERTH_UI_READER="user:password".
"""

import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

BASE, SHOTS = sys.argv[1], sys.argv[2]
ADMIN = os.environ["BERTH_UI_ADMIN"].split(":", 1)
READER = os.environ["BERTH_UI_READER"].split(":", 1)


def browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,800", "--disable-background-networking"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    # Debian's driver, named: Selenium must not look for (download) one of its own.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def click(driver, element):
    """Click what loads a new page, and wait until the old one is gone (a form's 303 included)."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def texts(driver, css):
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def heading(driver):
    return driver.find_element(By.TAG_NAME, "h1").text


def step(name, ok, detail):
    if not ok:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok: {name}", file=sys.stderr)


def log_in(driver, user, password):
    click(driver, driver.find_element(By.LINK_TEXT, "Log in"))
    step("the login form", heading(driver) == "Log in", heading(driver))
    driver.find_element(By.NAME, "user").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    click(driver, driver.find_element(By.CSS_SELECTOR, "form.login button"))
    step(f"{user} is logged in", user in driver.find_element(By.TAG_NAME, "header").text,
         driver.find_element(By.TAG_NAME, "header").text)


def log_out(driver):
    click(driver, driver.find_element(By.CSS_SELECTOR, "header form.who button"))
    step("logged out", "Log in" in driver.find_element(By.TAG_NAME, "header").text, driver.page_source)


def main():
    driver = browser()
    seen = {}
    try:
        # Anonymous: the public repositories, never the private one, in the list and a search.
        driver.get(f"{BASE}/ui/")
        names = texts(driver, "ul.repos a")
        step("anonymous sees the public repositories", "public/app" in names, names)
        step("anonymous never sees a private name", not any("private" in n for n in names)
             and "private" not in driver.page_source, names)
        search = driver.find_element(By.NAME, "q")
        search.send_keys("priv")
        click(driver, driver.find_element(By.CSS_SELECTOR, "form.search button"))
        step("a search of a private prefix finds nothing",
             texts(driver, "ul.repos a") == [] and "No repository you may see" in driver.page_source,
             driver.page_source)
        driver.find_element(By.NAME, "q").clear()
        driver.find_element(By.NAME, "q").send_keys("public/")
        click(driver, driver.find_element(By.CSS_SELECTOR, "form.search button"))
        step("a search lists by prefix", texts(driver, "ul.repos a") == ["public/app"], texts(driver, "ul.repos a"))

        # A repository's tags, a page at a time.
        click(driver, driver.find_element(By.LINK_TEXT, "public/app"))
        first = texts(driver, "table.tags tbody tr td:first-child a")
        step("the first page of tags has 50", len(first) == 50, first)
        step("anonymous gets no delete form", driver.find_elements(By.CSS_SELECTOR, "form.delete") == [], "")
        click(driver, driver.find_element(By.LINK_TEXT, "Next page"))
        second = texts(driver, "table.tags tbody tr td:first-child a")
        step("the second page has the rest", len(second) == 5 and not set(first) & set(second), second)
        step("no page after the last", driver.find_elements(By.LINK_TEXT, "Next page") == [], "")

        # A manifest's page: copy the podman pull line by digest.
        click(driver, driver.find_element(By.LINK_TEXT, second[0]))
        pulls = texts(driver, "ul.pull code")
        by_tag = [p for p in pulls if p.startswith("podman pull ") and p.endswith(f":{second[0]}")]
        by_digest = [p for p in pulls if p.startswith("podman pull ") and "@sha256:" in p]
        step("the manifest page shows pull lines by tag and digest", by_tag and by_digest, pulls)
        seen["pull"] = by_digest[0][len("podman pull "):]
        driver.save_screenshot(os.path.join(SHOTS, "browser-manifest.png"))

        # A reader logs in: the private repository appears, without delete forms or admin link.
        driver.get(f"{BASE}/ui/")
        log_in(driver, *READER)
        names = texts(driver, "ul.repos a")
        step("a reader sees the private repository", "private/secret" in names, names)
        step("a reader has no admin link", driver.find_elements(By.LINK_TEXT, "Administration") == [], "")
        click(driver, driver.find_element(By.LINK_TEXT, "private/secret"))
        rows = texts(driver, "table.tags tbody tr td:first-child a")
        step("a reader sees the private tags", sorted(rows) == ["v1", "v2"], rows)
        step("a reader gets no delete form", driver.find_elements(By.CSS_SELECTOR, "form.delete") == [], "")
        driver.get(f"{BASE}/ui/admin")
        step("the admin page is not there for a reader", heading(driver) == "Not found", heading(driver))
        driver.get(f"{BASE}/ui/")
        log_out(driver)
        step("after logging out the private name is gone", "private" not in driver.page_source, driver.page_source)

        # The admin logs in, deletes a tag with the form, and sees the admin page.
        log_in(driver, *ADMIN)
        click(driver, driver.find_element(By.LINK_TEXT, "private/secret"))
        before = texts(driver, "table.tags tbody tr td:first-child a")
        step("the admin sees both tags", sorted(before) == ["v1", "v2"], before)
        click(driver, driver.find_element(By.CSS_SELECTOR, "button[title='Delete tag v2']"))
        after = texts(driver, "table.tags tbody tr td:first-child a")
        step("the deleted tag is gone from the page", after == ["v1"], after)
        driver.save_screenshot(os.path.join(SHOTS, "browser-tags-admin.png"))
        click(driver, driver.find_element(By.LINK_TEXT, "Administration"))
        step("the admin page", heading(driver) == "Administration", heading(driver))
        quotas = texts(driver, "table.quotas tbody td:first-child")
        step("the admin page lists the quota rules", quotas == ["private/*"], quotas)
        mirrors = texts(driver, "table.mirrors tbody td:nth-child(2)")
        step("the admin page lists the mirror upstreams", mirrors == ["http://127.0.0.1:9"], mirrors)
        step("no mirror credential is shown",
             "hunter2" not in driver.page_source and "puller" not in driver.page_source, "")
        driver.save_screenshot(os.path.join(SHOTS, "admin.png"))
        log_out(driver)
    finally:
        driver.quit()
    print(json.dumps(seen))


main()
