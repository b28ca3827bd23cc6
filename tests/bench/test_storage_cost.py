"""bench.storage_cost, the storage's own cost of a refresh: a short real run on each
in-process backend (every refresh rotates), and its argument check. No timing value is
asserted beyond being positive."""

from __future__ import annotations

import pytest

from bench import storage_cost


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_short_run_rotates_every_token_and_reports_cpu_per_refresh(backend: str) -> None:
    cost = await storage_cost.measure(backend, grants=200, refreshes=130)
    assert cost.refreshes == 130
    assert cost.process_us > 0 and cost.loop_us > 0
    assert cost.line().startswith(f"{backend}: the storage's work of a refresh ")


def test_more_refreshes_than_grants_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert storage_cost.main(["--grants", "10", "--refreshes", "11"]) == 2
    assert "--refreshes" in capsys.readouterr().err


def test_the_command_line_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert storage_cost.main(["--backend", "memory", "--grants", "70", "--refreshes", "64"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("memory: the storage's work of a refresh ")
