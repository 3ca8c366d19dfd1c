import pytest

from tests.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Sila + Rasa with the trained model, shared by the end-to-end tests of one run."""
    running = Stack.start(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()
