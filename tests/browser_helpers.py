"""The headless Chromium the browser tests share (the HTML report's and the docs site's): the
Debian packages chromium and chromium-driver (``make browser``), never a downloaded driver."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def driver():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER}: install Debian packages chromium "
                    "and chromium-driver (make test does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev extra: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    # Explicit binaries and SE_OFFLINE: Selenium Manager must never try to download a driver.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")
        drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield drv
        finally:
            drv.quit()
