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
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        env=subprocess_env(example_site),
        cwd=EXAMPLE,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
    # The suites ran: the storage conformance cases and the provider contract cases.
    assert "TestJournalStorage" not in result.stdout  # -q prints no names on success
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 60
