import io

from rich.console import Console

from steerable.demo import prm_demo


def test_the_demo_search_table_sets_pf_beside_voting_at_four_times_its_budget():
    from steerable.lm.local import LocalGenerator

    out = io.StringIO()
    prm_demo(Console(file=out, width=120), LocalGenerator.from_pretrained("builtin", device="cpu"), items=2, budget=2)
    text = out.getvalue()
    rows = [line for line in text.splitlines() if "%" in line]
    assert [(line.split()[1], line.split()[3]) for line in rows] == [
        ("greedy", "1"),
        ("sc", "2"),
        ("sc", "8"),
        ("bon", "2"),
        ("pf", "2"),
    ]
    assert "voting at 8 vs the built-in PRM at 2" in text


def test_the_demo_steering_section_steers():
    from steerable.demo import steering_demo
    from steerable.lm.local import LocalGenerator

    out = io.StringIO()
    steering_demo(Console(file=out, width=120), LocalGenerator.from_pretrained("builtin", device="cpu"))
    text = out.getvalue()
    assert "+ refusal vector x2 -> I can't" in text
    rows = {line.split("│")[1].strip(): line.split("│")[3].strip() for line in text.splitlines() if "│" in line}
    assert float(rows["+ efficiency vector x0.5"]) < float(rows["plain"])  # shorter solutions
