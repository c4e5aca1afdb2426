import json

import pytest

from steerable.errors import ConfigError, InputError
from steerable.tasks.answers import make_checker
from steerable.tasks.loader import load_task


def test_builtin_tasks_are_the_held_out_eval_problems():
    items = load_task("builtin:medium", limit=5)
    assert len(items) == 5 and items[0].prompt.startswith("Q: ")
    assert load_task("builtin:medium", limit=5) == items
    with pytest.raises(Exception, match="unknown split"):
        load_task("builtin:nope")


def test_jsonl_tasks_report_the_bad_line(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"prompt": "2+2?", "answer": 4}) + "\n\n" + '{"prompt": "x"}\n')
    with pytest.raises(InputError, match=r"t.jsonl:3 needs"):
        load_task(str(f))
    f.write_text(json.dumps({"prompt": "2+2?", "answer": 4}) + "\n{oops\n")
    with pytest.raises(InputError, match=r"t.jsonl:2 is not JSON"):
        load_task(str(f))
    f.write_text(json.dumps({"prompt": "2+2?", "answer": 4, "id": "a"}) + "\n")
    assert load_task(str(f))[0].answer == "4" and load_task(str(f))[0].id == "a"
    with pytest.raises(InputError, match="neither"):
        load_task(str(tmp_path / "missing.jsonl"))


def test_answer_checkers():
    builtin = make_checker("builtin")
    assert builtin.correct("1+2=3\nA: 3", "3") and not builtin.correct("A: 4", "3") and not builtin.correct("", "3")
    rx = make_checker(regex=r"answer is (\d+)")
    assert rx.correct("so the answer is 12. No, the answer is 13", "13")
    with pytest.raises(ConfigError, match="does not compile"):
        make_checker(regex="(")
    boxed = make_checker("boxed")
    assert boxed.correct(r"thus \boxed{\frac{1}{2}}", "0.5")
    assert boxed.correct(r"\boxed{x^{2}}", "x^2")
    assert not boxed.correct(r"\boxed{3}", "4") and not boxed.correct("no box", "4")
    with pytest.raises(ConfigError):
        make_checker("latex")
