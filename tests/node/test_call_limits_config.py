"""Call limits and predicate-table bounds in the config: safe defaults, coherent values."""
from __future__ import annotations

import pytest

from node.core.config import ConfigError, load_config

from .test_config import BASE, write


def test_defaults_keep_workers_for_health_and_bound_predicate_tables(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    g = cfg.grpc
    assert g.partner_streams < g.server_threads - g.reserved_threads
    assert g.idle_seconds < g.deadline_seconds
    assert cfg.datasets[0].grants[0].daily_preparations == 10
    assert cfg.predicate_tables.max_tables >= 1 and cfg.predicate_tables.max_bytes > 0


@pytest.mark.parametrize("grpc, message", [
    ("server_threads = 8\nreserved_threads = 8", "reserved_threads must be smaller"),
    ("server_threads = 8\nreserved_threads = 4\npartner_streams = 5", "partner_streams must not exceed"),
    ("idle_seconds = 0", "greater than 0"),
])
def test_incoherent_call_limits_are_refused(tmp_path, grpc, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BASE + f"\n[grpc]\n{grpc}\n"))
