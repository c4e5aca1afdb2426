import io
import re
import sys

import pytest
from rich.console import Console

from steerable.demo import prm_demo

pytestmark = pytest.mark.slow  # runs the demo's sections on the built-in world


def console(out: io.StringIO) -> Console:
    return Console(file=out, width=120)


def test_the_demo_search_table_runs_on_items_greedy_gets_wrong_beside_voting_at_four_times_the_budget():
    from steerable.lm.local import LocalGenerator

    out = io.StringIO()
    gen = LocalGenerator.from_pretrained("builtin", device="cpu")
    solved = prm_demo(console(out), gen, selected=2, budget=1, pool=20)  # greedy misses 3 of the first 20
    text = out.getvalue()
    rows = [line.split("│")[1:4] for line in text.splitlines() if " of 2" in line and "│" in line]
    printed = {f"{m.strip()}@{n.strip()}": int(s.split()[0]) for m, n, s in rows}
    assert list(printed) == ["greedy@1", "sc@1", "sc@4", "bon@1", "pf@1"]
    assert printed == solved  # the table says what the section computed
    assert solved["greedy@1"] == 0  # the items were chosen as greedy's misses: the search's greedy agrees
    words = " ".join(text.split())
    assert re.search(r"greedy decoding is wrong on \d+ of 20 hard problems\. On the first 2 of them", words)
    assert re.search(r"voting at 4 returned greedy's own answer on [0-2] of 2", words)
    assert "Measured on all 200 builtin:hard items: greedy 83.5%" in words


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
    steering_demo(console(out), LocalGenerator.from_pretrained("builtin", device="cpu"))
    text = out.getvalue()
    assert "+ refusal vector x2 -> I can't" in text
    rows = {line.split("│")[1].strip(): line.split("│")[3].strip() for line in text.splitlines() if "│" in line}
    assert float(rows["+ efficiency vector x0.5"]) < float(rows["plain"])  # shorter solutions


def png_is_a_picture(path, min_side: int = 100) -> None:
    import matplotlib.image

    img = matplotlib.image.imread(path)  # [height, width, channels]
    assert min(img.shape[:2]) >= min_side
    assert img.std() > 0.05  # not a blank canvas


def test_the_demo_diffusion_section_sets_fk_beside_best_of_n_at_the_nfe_each_run_counted(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("sklearn")
    from steerable.demo import diffusion_demo

    out = io.StringIO()
    picks = diffusion_demo(console(out), tmp_path, targets=3, budget=2, steps=10)
    text = out.getvalue()
    assert [p.target for p in picks["bon"]] == [p.target for p in picks["fk"]] == ["0", "1", "2"]
    assert [p.nfe for p in picks["bon"]] == [p.nfe for p in picks["fk"]]  # equal compute, read from each cost
    assert all(p.nfe > 0 for p in picks["fk"])
    bon, fk = (sum(p.accepted for p in picks[m]) for m in ("bon", "fk"))
    assert f"judge accepted: best-of-2 {bon} of 3, FK (2 particles) {fk} of 3" in text
    assert "target 0  target 1  target 2" in text and text.count("▀") + text.count("█") > 10  # the samples drawn
    png_is_a_picture(tmp_path / "digits.png")
    assert str(tmp_path / "digits.png") in text


def test_the_demo_quotes_the_digits_record_shipped_beside_the_model(tmp_path):
    pytest.importorskip("sklearn")
    from steerable.demo.diffusion import measured_digits
    from steerable.diffusion.digits import BUILTIN

    line = measured_digits(BUILTIN / "steering.json", 4)
    assert line.startswith("Measured on 200 targets at 4 (200 NFE): judge success best-of-4 0.36, FK 0.785")
    assert measured_digits(BUILTIN / "steering.json", 3) is None  # no row at that budget
    assert measured_digits(tmp_path / "none.json", 4) is None


def test_the_demo_control_section_runs_base_and_vgps_on_the_same_seeded_episodes(tmp_path):
    pytest.importorskip("gymnasium")
    from steerable.demo import control_demo

    out = io.StringIO()
    rows = control_demo(console(out), tmp_path, episodes=2, budget=2)
    text = out.getvalue()
    assert [(r["method"], r["episodes"]) for r in rows] == [("base", 2), ("vgps", 2)]
    assert rows[1]["nfe_per_step"] > rows[0]["nfe_per_step"]  # V-GPS samples 2 chunks per prediction
    assert rows[0]["scorer_calls_per_step"] == 0 < rows[1]["scorer_calls_per_step"]
    table = {line.split("│")[1].strip(): line.split("│")[2:4] for line in text.splitlines() if " of 2 " in line}
    for label, row in zip(("base (BC)", "V-GPS K=2"), rows, strict=True):
        success, ret = table[label]
        assert success.strip() == f"{row['successes']} of 2" and float(ret) == pytest.approx(row["return"], abs=0.01)
    for name in ("base", "vgps"):
        png_is_a_picture(tmp_path / f"pointnav-{name}.png")


def test_the_demo_control_record_shipped_beside_the_critic_is_quoted():
    pytest.importorskip("gymnasium")
    from steerable.control.registry import builtin_dir
    from steerable.demo.control import measured_control

    line = measured_control(builtin_dir("builtin:pointnav", "critic") / "steering.json", 8)
    assert line.startswith("Measured on 200 episodes: success base 0.340, V-GPS K = 8 0.690")


@pytest.mark.parametrize(
    ("section", "module", "extra"),
    [("diffusion_demo", "sklearn", "diffusion"), ("control_demo", "gymnasium", "control")],
)
def test_a_demo_section_without_its_extra_says_which_to_install_in_one_line(
    monkeypatch, tmp_path, section, module, extra
):
    import steerable.demo

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = io.StringIO()
    assert getattr(steerable.demo, section)(console(out), tmp_path) is None
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert f"needs the [{extra}] extra ({module} is missing): pip install 'steerable[{extra}]'" in lines[0]


def test_the_demo_agents_section_runs_greedy_and_tree_on_the_same_tasks():
    from steerable.demo import agents_demo

    out = io.StringIO()
    rows = agents_demo(console(out), tasks=2, budget=1)
    assert [(r["method"], r["items"]) for r in rows] == [("greedy", 2), ("tree", 2)]
    assert rows[1]["env_steps"] > rows[1]["real_steps"]  # the tree searched in copies of the environment
    text = out.getvalue()
    assert "[get] Q: find k" in text and "tree (c=1)" in text
