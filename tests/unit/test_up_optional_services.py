"""The launcher's switches for leaving optional services out: flags and environment."""

from __future__ import annotations

from services.up.config import config_from_args
from services.up.launcher import OPTIONAL_SERVICES


def test_every_optional_service_runs_unless_switched_off() -> None:
    cfg, _ = config_from_args([], {})
    assert cfg.without == frozenset()
    assert {s.name for s in OPTIONAL_SERVICES} == {"search", "query_dag"}


def test_no_search_and_no_query_dag_flags_leave_those_services_out() -> None:
    cfg, _ = config_from_args(["--no-search"], {})
    assert cfg.without == {"search"}
    cfg, _ = config_from_args(["--no-search", "--no-query-dag"], {})
    assert cfg.without == {"search", "query_dag"}


def test_environment_switches_services_off_like_the_flags() -> None:
    cfg, _ = config_from_args([], {"TOPGUN_NO_QUERY_DAG": "1", "TOPGUN_NO_SEARCH": "false"})
    assert cfg.without == {"query_dag"}
