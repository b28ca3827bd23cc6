"""The example plugin distribution's own test suite (the storage conformance suite and the
provider contract, imported from the installed mcp_oauthd.testing) passes against the
pip-installed example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.plugins.conftest import EXAMPLE, subprocess_env


def test_the_example_plugins_pass_the_conformance_kit(example_site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        env=subprocess_env(example_site),
        cwd=EXAMPLE,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = [line for line in result.stdout.splitlines() if " PASSED" in line]
    # Both kits ran: the storage conformance suite and the provider contract.
    conformance = [line for line in passed if "::TestJournalStorage::" in line]
    contract = [line for line in passed if "::TestFixedUserProvider::" in line]
    assert len(conformance) >= 50
    assert any("concurrent_consumes_of_one_code" in line for line in conformance)
    assert any("test_a_code_works_once" in line for line in contract)
    assert any("test_a_code_is_refused_under_another_logins" in line for line in contract)
