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
