"""The upload page at GET /, driven in a real headless Chromium (the system package and its
chromedriver; nothing is downloaded). Screenshots land in the test's temporary directory."""

import re
import shutil
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import encode, photo

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        pytest.fail("chromium and chromium-driver are missing: run `make test` (scripts/install_system.sh test)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, live_server):
    browser.get(live_server + "/")
    return browser


def upload(page, path: Path):
    page.find_element(By.ID, "file").send_keys(str(path))


def wait(page, condition, seconds: float = 30):
    return WebDriverWait(page, seconds).until(condition)


def test_the_page_needs_nothing_from_outside(live_server):
    html = requests.get(live_server + "/", timeout=10).text
    assert "<script>" in html and "<style>" in html  # inline: works offline
    assert not re.search(r"<(script|link|img)[^>]*\b(src|href)=", html) and "//" not in html.replace("://", "")


def test_a_jpeg_shows_its_preview_and_labels(page, tmp_path):
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode(photo(), "JPEG"))
    upload(page, image)
    rows = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#labels .label") or False)
    assert len(rows) == 5  # TOP_K
    label, bar, score = rows[0].find_elements(By.XPATH, "./*")
    assert label.text and 0 <= float(score.text) <= 1 and bar.find_element(By.TAG_NAME, "span").size["width"] > 0
    preview = page.find_element(By.ID, "preview")
    assert preview.is_displayed() and page.execute_script("return arguments[0].naturalWidth", preview) == 600
    assert page.find_element(By.ID, "error").text == ""
    assert "request" in page.find_element(By.ID, "meta").text
    page.save_screenshot(str(tmp_path / "labels.png"))
    assert (tmp_path / "labels.png").stat().st_size > 1000


def test_a_text_file_shows_a_readable_error(page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are not pixels")
    upload(page, text)
    error = wait(page, lambda d: d.find_element(By.ID, "error").text or False)
    assert "notes.txt" in error and "not an image" in error
    assert page.find_elements(By.CSS_SELECTOR, "#labels .label") == []
    page.save_screenshot(str(tmp_path / "error.png"))


def test_dropping_a_file_classifies_it(page):
    # A drop event carrying a File, as the browser fires it when a user drags one in.
    page.execute_script(
        """
        const canvas = document.createElement("canvas");
        canvas.width = 64; canvas.height = 48;
        canvas.getContext("2d").fillRect(0, 0, 32, 24);
        canvas.toBlob((blob) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], "drawn.png", { type: "image/png" }));
          document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer }));
        }, "image/png");
        """
    )
    wait(page, EC.presence_of_element_located((By.CSS_SELECTOR, "#labels .label")))
    assert page.find_element(By.ID, "status").text == "Done."
