"""The benchmark script runs end to end in quick mode (a few MiB, one round).

This proves ``benchmarks/bench.py`` works; it measures nothing. The timings
themselves come from the full run, described in ``benchmarks/README.md``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tools

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
# A row of the medians table: label, wall, cpu, rss, MiB/s, ratios.
MEDIAN_ROW = r"^  {label} +(?P<wall>[\d.]+) +(?P<cpu>[\d.]+) +(?P<rss>[\d.]+) +\d+ "


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[str]:
    """The output of two quick runs sharing one work folder."""
    require_tools("docker-registry", "skopeo")
    work = tmp_path_factory.mktemp("bench")
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(BENCH), "--quick", "--work-dir", str(work)],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs.append(done.stdout)
    return outputs


@pytest.mark.parametrize(
    "heading",
    [
        "== machine limits",
        "== 1 interleaved rounds",
        "== other runs (cold cache)",
        "== medians over the rounds",
        "== warm re-pull and .tar.gz",
        "== issue 5 targets",
    ],
    ids=["limits", "rounds", "other-runs", "medians", "warm-and-gzip", "targets"],
)
def test_the_report_has_every_section(reports, heading):
    assert heading in reports[0]


@pytest.mark.parametrize(
    "label",
    ["dgetkit", "dgetkit warm", "dgetkit -c", "dgetkit -c warm", "skopeo"],
    ids=["default", "default-warm", "compressed", "compressed-warm", "skopeo"],
)
def test_every_tool_was_measured(reports, label):
    pattern = MEDIAN_ROW.format(label=re.escape(label))
    row = re.search(pattern, reports[0], re.MULTILINE)

    assert row is not None, reports[0]
    assert float(row["wall"]) > 0
    assert float(row["cpu"]) > 0
    assert 1 < float(row["rss"]) < 1000


@pytest.mark.parametrize(
    "target",
    [
        "default layout / skopeo",
        "compressed layers / skopeo",
        "warm re-pull / cold pull",
        "peak RSS, single 2 MiB layer",
        "peak RSS, single 4 MiB layer",
        ".tar.gz pull / stdlib gzip",
    ],
    ids=["default", "compressed", "warm", "rss-2", "rss-4", "tar-gz"],
)
def test_every_target_gets_a_verdict(reports, target):
    line = next(line for line in reports[0].splitlines() if target in line)

    assert re.search(r"measured +[\d.]+(x| MiB) +(met|NOT met)$", line), line


@pytest.mark.parametrize(
    ("run", "built"), [(0, True), (1, False)], ids=["first-run", "second-run"]
)
def test_layers_are_built_once_per_seed_and_size(reports, run, built):
    assert ("built app in" in reports[run]) is built
