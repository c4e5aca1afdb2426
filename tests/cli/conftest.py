from dataclasses import dataclass

import pytest


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``steerable ARGS...`` in this process: its exit code, stdout and stderr."""
    from steerable.cli import run as main

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


@pytest.fixture
def fails(cli):
    """``fails(needle, *args)``: the run fails as a user error must: exit 2, one line on stderr holding ``needle``."""

    def run(needle: str, *args: str) -> Ran:
        r = cli(*args)
        assert r.code == 2, (r.code, r.out, r.err)
        assert needle in r.err, r.err
        assert "Traceback" not in r.err
        assert len(r.err.strip().splitlines()) == 1, r.err
        return r

    return run
