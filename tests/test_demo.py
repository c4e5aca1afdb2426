import io

import pytest
from rich.console import Console

from steerable.demo import prm_demo

pytestmark = pytest.mark.slow  # runs the demo's sections on the built-in world


def test_the_demo_search_table_sets_pf_beside_voting_at_four_times_its_budget():
    from steerable.lm.local import LocalGenerator

    out = io.StringIO()
    prm_demo(Console(file=out, width=120), LocalGenerator.from_pretrained("builtin", device="cpu"), items=2, budget=2)
    text = out.getvalue()
    rows = [line for line in text.splitlines() if "%" in line and "│" in line]
    assert [(line.split()[1], line.split()[3]) for line in rows] == [
        ("greedy", "1"),
        ("sc", "2"),
        ("sc", "8"),
        ("bon", "2"),
        ("pf", "2"),
    ]
    assert "voting at 8 vs the built-in PRM at 2" in text
    assert "Measured on all 200 builtin:hard items: greedy 83.5%" in text.replace("\n", " ")


def test_the_demo_quotes_the_prm_record_only_when_it_has_scaling_figures(tmp_path):
    from steerable.demo import measured_scaling

    record = tmp_path / "prm.json"
    assert measured_scaling(record) is None  # no file
    record.write_text('{"step_auroc": 0.9}')
    assert measured_scaling(record) is None
    record.write_text(
        '{"scaling": {"task": "t", "items": 9, "accuracy": {"pf@4": 0.5}, '
        '"pf@4_vs_sc@16": {"only_pf": 2, "only_sc": 1, "sign_test_p": 1.0}}}'
    )
    assert measured_scaling(record).startswith("Measured on all 9 t items: pf@4 50.0% (pf@4 vs sc@16: 2 items")


def test_the_demo_steering_section_steers():
    from steerable.demo import steering_demo
    from steerable.lm.local import LocalGenerator

    out = io.StringIO()
    steering_demo(Console(file=out, width=120), LocalGenerator.from_pretrained("builtin", device="cpu"))
    text = out.getvalue()
    assert "+ refusal vector x2 -> I can't" in text
    rows = {line.split("│")[1].strip(): line.split("│")[3].strip() for line in text.splitlines() if "│" in line}
    assert float(rows["+ efficiency vector x0.5"]) < float(rows["plain"])  # shorter solutions
