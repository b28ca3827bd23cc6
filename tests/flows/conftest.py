# The daemon fixtures live in tests/daemon.py and are registered for every test folder by
# tests/conftest.py; `Daemon` is re-exported here for the tests that import it from here.
from tests.daemon import Daemon

__all__ = ["Daemon"]
