"""The dashboard in a real browser (issue 15): headless Chromium (Debian's chromium +
chromium-driver, driven by Selenium) against a server started on 127.0.0.1.

``make test`` (and so CI) sets AVAR_BROWSER_TESTS=required, under which a missing browser
fails these tests instead of skipping them. Screenshots are kept in AVAR_TEST_ARTIFACTS
(default ``test-artifacts/`` in the checkout); the README's is one of them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from avar.serve.dashboard.app import DashboardConfig
from avar.serve.events import Event
from avar.serve.predict import StepRecord
from avar.serve.store import EventStore
from dashboard_helpers import ServerThread, generated_store
from test_watch import _clip, tone_run

ARTIFACTS = Path(os.environ.get("AVAR_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        message = "headless Chromium tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("AVAR_BROWSER_TESTS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No background traffic: this machine's network is closed, and nothing may leave 127.0.0.1.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(condition, timeout=20.0, what="the page"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    return path


def test_events_list_then_an_event_played_with_a_moving_cursor(browser, tmp_path):
    from selenium.webdriver.common.by import By

    store = generated_store(tmp_path, cameras=3, per_camera=30)
    config = DashboardConfig(db=store["db"], media=[store["media"]], thumbnails=store["thumbnails"])
    with ServerThread(config) as server:
        browser.get(f"{server.url}/events")
        rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
        assert len(rows) == 50 and browser.find_element(By.ID, "total").text == "91"
        assert browser.find_element(By.ID, "next").get_attribute("href").endswith("page=2")
        browser.get(f"{server.url}/events?label=explosion")
        rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
        assert len(rows) == 1
        thumb = rows[0].find_element(By.TAG_NAME, "img")
        wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb),
                 what="the thumbnail")
        assert browser.execute_script("return arguments[0].naturalWidth", thumb) == 320
        screenshot(browser, "dashboard-events.png")

        rows[0].find_element(By.LINK_TEXT, "explosion").click()
        start, end = store["event"]
        wait_for(lambda: "/events/" in browser.current_url, what="the event page")
        video = browser.find_element(By.ID, "player")
        # The page seeks to just before the event once the file's header has arrived.
        wait_for(lambda: browser.execute_script("return arguments[0].readyState >= 1 && arguments[0].currentTime",
                                                video) == start - 1, what="the seek to the event")
        assert browser.execute_script("return arguments[0].duration", video) == pytest.approx(20, abs=0.2)
        browser.execute_script("arguments[0].play()", video)
        curve = browser.find_element(By.ID, "curve")
        first = wait_for(lambda: float(curve.get_attribute("data-cursor") or 0) > start - 0.9,
                         what="the cursor to start moving") and float(curve.get_attribute("data-cursor"))
        wait_for(lambda: float(curve.get_attribute("data-cursor")) > first + 0.5, what="the cursor to follow playback")
        assert not browser.execute_script("return arguments[0].error", video)
        # The cursor is the video's time, and seeking by the curve moves the video.
        assert abs(float(curve.get_attribute("data-cursor")) - browser.execute_script(
            "return arguments[0].currentTime", video)) < 0.5
        browser.execute_script("arguments[0].pause()", video)
        steps = browser.execute_script("return window.timeline.steps.map((s) => s.time)")
        assert steps == [t for t in range(20) if t + 1 > start - 10 and t < end + 10]  # the event and 10 s around
        time.sleep(0.3)
        screenshot(browser, "dashboard-event.png")


def test_a_watcher_writing_shows_up_without_reloading(browser, tmp_path):
    from selenium.webdriver.common.by import By

    store = generated_store(tmp_path)
    config = DashboardConfig(db=store["db"], media=[store["media"]], poll_seconds=0.2)
    with ServerThread(config) as server, EventStore(store["db"]) as writer:
        browser.get(f"{server.url}/events")
        marker = browser.execute_script("window.marker = 1; return window.marker")
        writer.add_source("rtsp://yard/live", "stream")
        new_id = writer.add_events([Event("rtsp://yard/live", 100.0, 104.0, "fight", 0.91, 102.0)])[0]
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'#events tr[data-id="{new_id}"]'), what="the new event")
        assert browser.find_element(By.ID, "total").text == "2"
        assert browser.execute_script("return window.marker") == marker  # the same page: no reload

        browser.get(f"{server.url}/sources/2")
        assert browser.execute_script("return window.timeline.steps.length") == 0
        writer.add_steps("rtsp://yard/live", [StepRecord(float(t), float(t + 1), "fight", {"normal": 0.2, "fight": 0.8},
                                                         0.8) for t in range(100, 106)])
        wait_for(lambda: browser.execute_script("return window.timeline.steps.length") == 6, what="the live steps")
        later = writer.add_events([Event("rtsp://yard/live", 110.0, 112.0, "fight", 0.8, 111.0)])[0]
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'#source-events tr[data-id="{later}"]'),
                 what="the source's new event")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tone_run(tmp_path_factory.mktemp("dashboard-run"))


def test_analyse_a_file_then_a_malformed_one(browser, tmp_path, run_dir):
    from selenium.webdriver.common.by import By

    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(run_dir, runs / "tone")
    config = DashboardConfig(db=tmp_path / "events.db", runs=runs)
    clip = _clip(tmp_path / "my clip.mp4", seconds=8, tone=(3, 6))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01not a video" * 500)
    with ServerThread(config) as server:
        browser.get(f"{server.url}/analyse")
        browser.find_element(By.ID, "file").send_keys(str(junk))
        browser.find_element(By.ID, "upload").click()
        status = browser.find_element(By.ID, "status")
        wait_for(lambda: "could not be read as media" in status.text, what="the error")
        assert "junk.mp4" in status.text and "error" in status.get_attribute("class")
        assert not any((tmp_path / "uploads").iterdir())

        browser.get(f"{server.url}/analyse")
        browser.find_element(By.ID, "file").send_keys(str(clip))
        browser.find_element(By.ID, "upload").click()
        wait_for(lambda: "/sources/" in browser.current_url, timeout=120, what="the analysed file's view")
        wait_for(lambda: browser.execute_script("return window.timeline && window.timeline.steps.length") == 8,
                 what="the analysed steps")
        assert "my_clip" in browser.find_element(By.CLASS_NAME, "source-name").text
        assert browser.execute_script("return document.getElementById('player').readyState >= 0")
        screenshot(browser, "dashboard-analysed.png")
