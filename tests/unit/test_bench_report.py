"""The bench's derived figures: CPU per check-in, and how a comparison prints them."""

from __future__ import annotations

from typing import Any

from devtools.bench.run import compare, cpu_ms_per_checkin


def _result(cores: dict[str, float], elapsed_s: float, checkins: int = 20_000) -> dict[str, Any]:
    return {"when": "t", "baselines": {"kafka": {"produce_consume_per_s": 40_000.0},
                                       "postgres": {"commits_per_s_8_conns": 6_000.0}},
            "system": {"throughput": {"checkins": checkins, "elapsed_s": elapsed_s,
                                      "checkins_per_s": checkins / elapsed_s,
                                      "cpu_cores_used": cores},
                       "latency": [], "http": []}}


def test_cpu_per_checkin_is_cores_times_time_over_checkins_busiest_first() -> None:
    result = _result({"logistics": 0.25, "circulation": 0.6, "idle": 0.001}, elapsed_s=10.0)
    assert cpu_ms_per_checkin(result) == {"circulation": 0.3, "logistics": 0.125}


def test_a_comparison_shows_small_figures_with_three_decimals() -> None:
    then = _result({"circulation": 0.6}, elapsed_s=10.0)
    now = _result({"circulation": 0.5}, elapsed_s=10.0)
    table = compare(now, then)
    assert "| circulation CPU ms per check-in | 0.300 | 0.250 | -17 % |" in table
    assert "| check-ins/s sustained | 2,000.0 | 2,000.0 | +0 % |" in table
