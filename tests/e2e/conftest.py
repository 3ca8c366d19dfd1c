import pytest
from playwright.async_api import async_playwright

from tests.stack import Stack

# Debian's Chromium, never a downloaded browser; background networking off on a closed network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Sila + Rasa with the trained model, shared by the end-to-end tests of one run."""
    running = Stack.start(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture
async def browser():
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
