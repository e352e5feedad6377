"""`bench gateway --profile`: a short real run gives the CPU table's rows from the workers' and
Redis' own counters, and a flame graph of one worker that names the gateway's code."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashsale.engine.settings import load_settings
from flashsale.loadtests.bench.flame import write_flamegraph
from flashsale.loadtests.bench.gateway import bench_gateway
from flashsale.loadtests.bench.profile import CPU_HEADER, Profile, categorize, read_collapsed

HEALTHZ, CHECKOUT = "GET /healthz", "POST /v1/sales/{sale}/holds"


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    profile = Profile(folder=tmp_path_factory.mktemp("artifacts"))
    rows = bench_gateway(load_settings(), 1, 16, 1, profile)
    assert [r.name for r in rows] == [HEALTHZ, CHECKOUT]
    return profile


def test_cpu_table_has_a_row_per_side(profiled: Profile) -> None:
    lines = profiled.lines()
    assert lines[1:3] == CPU_HEADER
    assert [u.name for u in profiled.uses] == [HEALTHZ, CHECKOUT]
    assert all(line in lines for line in (u.row() for u in profiled.uses))
    for use in profiled.uses:
        assert use.requests > 0 and use.process_us > 0 and use.redis_process_us >= 0


def test_redis_counters_cover_the_measured_run(profiled: Profile) -> None:
    """Each checkout runs the reserve script once; /healthz none (background loops aside)."""
    healthz, checkout = profiled.uses
    assert checkout.scripts >= 0.99 and checkout.script_us > 0
    assert healthz.scripts < 0.1


def test_flame_graphs_name_the_gateway(profiled: Profile) -> None:
    svgs = sorted(profiled.folder.glob("profile-*.svg"))
    assert len(svgs) == 2 and len(profiled.flames) == 2
    checkout = next(p for p in svgs if "holds" in p.name)
    text = checkout.read_text()
    assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
    assert "Flame Graph" in text and text.count("<rect") > 20
    assert "flashsale/gateway/checkout.py" in text
    assert str(checkout) in profiled.flames[1]


def test_collapsed_stacks_are_charged_to_the_leaf_most_category(tmp_path: Path) -> None:
    stacks = read_collapsed(
        "main (app.py:1);dispatch (starlette/routing.py:5);dumps (json/__init__.py:2) 3\n"
        "main (app.py:1);Runner.run (asyncio/runners.py:118) 2\n"
        "not a stack line\n"
    )
    assert sum(stacks.values()) == 5
    assert [categorize(f) for f in stacks] == [
        "JSON",
        "event loop in C (uvloop: epoll, reads, callbacks)",
    ]
    svg = tmp_path / "f.svg"
    write_flamegraph(stacks, svg, title="t")
    assert svg.read_text().count("<title>") == 4  # main, dispatch, dumps, Runner.run
