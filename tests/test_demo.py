import io

from rich.console import Console

from steerable.demo import prm_demo


def test_the_demo_search_table_runs_every_method():
    from steerable.lm.local import LocalGenerator

    out = io.StringIO()
    prm_demo(Console(file=out, width=120), LocalGenerator.from_pretrained("builtin", device="cpu"), items=2, budget=2)
    text = out.getvalue()
    rows = [line for line in text.splitlines() if "%" in line]
    assert [line.split()[1] for line in rows] == ["greedy", "sc", "bon", "pf", "epf"]
    assert "built-in PRM" in text


def test_the_demo_steering_section_steers():
    from steerable.demo import steering_demo
    from steerable.lm.local import LocalGenerator

    out = io.StringIO()
    steering_demo(Console(file=out, width=120), LocalGenerator.from_pretrained("builtin", device="cpu"))
    text = out.getvalue()
    assert "+ refusal vector x2 -> I can't" in text
    rows = {line.split("│")[1].strip(): line.split("│")[3].strip() for line in text.splitlines() if "│" in line}
    assert float(rows["+ efficiency vector x0.5"]) < float(rows["plain"])  # shorter solutions
