"""Cost: spend per judge from token prices, kept apart from generation spend, and ``--max-cost``,
which stops
cleanly (no half-written rows, non-zero exit) and leaves a run that a rerun completes without paying
twice.
Against the fault server as a separate process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cli import EXIT_BUDGET, main
from harness.engine.limits import Budget
from harness.records import JudgeConfig
from harness.testing.fault_server import RunningServer, start_fault_server
from tests.test_engine_faults import harness_run, manifest, rows, run_dir, write_judge, write_suite

PRICES: dict[str, Any] = {"price_per_million_input": 3.0, "price_per_million_output": 15.0}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_fault_server(latency_ms=20, retry_after_s=0.05, seed=3) as running:
        yield running


@pytest.fixture
def clean(server: RunningServer) -> RunningServer:
    server.configure(latency_ms=20, rate_429=0.0, rate_500=0.0, rate_truncated=0.0)
    server.reset()
    return server


def cost(row: dict[str, Any]) -> float:
    return (row["tokens_in"] * 3.0 + row["tokens_out"] * 15.0) / 1e6


def test_cost_follows_token_prices() -> None:
    config = JudgeConfig(id="j", backend="openai", **PRICES)
    assert (
        config.priced
        and config.cost(1_000_000, 0) == 3.0
        and config.cost(1000, 2000) == pytest.approx(0.033)
    )
    free = JudgeConfig(id="j", backend="openai")
    assert not free.priced and free.cost(10**9, 10**9) == 0.0
    assert all(
        JudgeConfig.model_fields[f"price_per_million_{k}"].description for k in ("input", "output")
    )


def test_budget_is_exhausted_once_reached() -> None:
    budget = Budget(0.5)
    budget.add(0.3)
    assert not budget.exhausted
    budget.add(0.2)
    assert budget.exhausted
    unlimited = Budget(None)
    unlimited.add(1e9)
    assert not unlimited.exhausted


def test_spend_per_judge_is_shown_and_recorded_apart_from_generation(
    clean: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(tmp_path, cases=5)
    judge = write_judge(tmp_path, clean.base_url, **PRICES)
    assert harness_run(suite, judge, tmp_path / "out") == 0
    folder = run_dir(tmp_path / "out")
    expected = sum(cost(r) for r in rows(folder))
    m = manifest(folder)
    assert m.spend is not None and m.spend.judges["fault"] == pytest.approx(expected, abs=1e-6)
    assert m.spend.generation == 0.0 and m.spend.total == pytest.approx(expected, abs=1e-6)
    assert m.sessions[0].spend_usd == pytest.approx(expected, abs=1e-6)
    assert m.sessions[0].judges["fault"].spend_usd == pytest.approx(expected, abs=1e-6)
    captured = capsys.readouterr()
    # The printed figure is the recorded one (checked equal to the expected spend just above),
    # formatted: formatting `expected` itself can round the other way at a half-cent boundary.
    shown = f"${m.sessions[0].judges['fault'].spend_usd:.4f}"
    assert shown in captured.out and "generation: $0.0000" in captured.out
    assert m.judge_configs[0]["price_per_million_input"] == 3.0


def test_max_cost_stops_cleanly_and_a_rerun_completes_without_paying_twice(
    clean: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(tmp_path, cases=20)  # 160 items
    judge = write_judge(tmp_path, clean.base_url, max_concurrency=4, **PRICES)
    assert harness_run(suite, judge, tmp_path / "full") == 0  # what the whole run costs
    full = manifest(run_dir(tmp_path / "full")).spend
    assert full is not None
    per_call = max(cost(r) for r in rows(run_dir(tmp_path / "full")))
    clean.configure(
        rate_429=0.05, rate_500=0.05, rate_truncated=0.05
    )  # faults while the budget runs out
    clean.reset()

    budget = round(full.total * 0.3, 6)
    code = harness_run(suite, judge, tmp_path / "capped", "--max-cost", str(budget))
    err = capsys.readouterr().err
    assert (
        code == EXIT_BUDGET and "--max-cost budget of $" in err and "items were not started" in err
    )
    folder = run_dir(tmp_path / "capped")
    first = rows(folder)  # every line whole (rows() checks), none an error made up by the stop
    assert 0 < len(first) < 160 and {r["status"] for r in first} == {"scored"}
    m = manifest(folder)
    spent = m.sessions[0].spend_usd
    assert budget <= spent <= budget + 4 * per_call  # overshoot: at most the calls in flight
    assert m.status == "incomplete" and "--max-cost" in m.sessions[0].stopped

    assert harness_run(suite, judge, tmp_path / "capped") == 0  # rerun: continues where it stopped
    final = rows(folder)
    assert len(final) == 160 and not [
        k for k, n in Counter(r["item_id"] for r in final).items() if n > 1
    ]
    assert clean.stats()["ok"] == 160  # each item answered exactly once over both invocations
    spend = manifest(folder).spend
    assert spend is not None and spend.total == pytest.approx(full.total, abs=1e-6)


def test_max_cost_warns_about_unpriced_judges(
    clean: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(tmp_path, cases=2)
    judge = write_judge(tmp_path, clean.base_url)
    assert harness_run(suite, judge, tmp_path / "out", "--max-cost", "0.01") == 0
    captured = capsys.readouterr()
    assert "warning: --max-cost counts no spend for judge(s) fault" in captured.err
    assert "spend not tracked (no prices)" in captured.out


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_max_cost_must_be_a_positive_amount(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "demo", "--max-cost", value])
    assert info.value.code == 2 and "--max-cost" in capsys.readouterr().err
