"""The import graph of src/steerable, lazy imports included: no cycle, and rooms import only rooms below them."""

import ast
import functools
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# A room imports its own modules and the rooms of a lower rank, never a room of its rank or above.
RANK = {
    "": 0,  # the base every room stands on: steerable/__init__ and the modules of BASE
    "lm": 1,
    "reward": 2,
    "steer": 2,
    "tasks": 3,
    "search": 4,
    "diffusion": 5,
    "agents": 5,  # language models acting in environments: the LM rooms below, never diffusion or control
    "control": 6,  # builds on the diffusion room
    "rl": 6,  # its rollouts may be agent episodes (the agents room)
    "bench": 7,
    "serve": 8,
    "cli": 9,  # the cli package and demo.py: they only wire
}
BASE = {
    "steerable",
    "steerable.errors",
    "steerable.config",
    "steerable.usage",
    "steerable.streams",
    "steerable.provenance",
    "steerable.training",
    "steerable.registry",
}


@functools.cache
def modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "steerable").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the steerable modules it imports anywhere in its body (a function's import counts too); parsed
    once per session (each test asks)."""
    return _graph(tuple(sorted(mods.items())))


@functools.cache
def _graph(items: tuple) -> dict[str, set[str]]:
    mods = dict(items)
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # ``from pkg import mod`` imports the module; ``from mod import name`` the module it is in
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # ``import a.b.c`` where c is a name: its module
                    t = t.rpartition(".")[0]
                if t.startswith("steerable") and t != name:
                    edges[name].add(t)
    return edges


def room(module: str) -> str:
    if module in BASE:
        return ""
    part = module.split(".")[1]
    if part == "demo":
        return "cli"
    return part


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_relative_imports():
    edges = import_graph(modules())
    assert "steerable.search.base" in edges["steerable.search.particle_filter"]  # top-level import
    assert "steerable.tasks.builtin.verifier" in edges["steerable.search.registry"]  # inside make_scorer
    assert "steerable.lm.types" in edges["steerable.lm.local"]


def test_no_import_cycle_among_steerable_modules():
    found = [sorted(c) for c in cycles(import_graph(modules()))]
    assert not found, f"import cycles: {found}"


def test_rooms_import_only_rooms_below_them():
    mods = modules()
    unknown = sorted({room(m) for m in mods} - set(RANK))
    assert not unknown, f"rooms {unknown} have no rank: add them to RANK in {__file__}"
    bad = [
        f"{a} -> {b}"
        for a, targets in sorted(import_graph(mods).items())
        for b in sorted(targets)
        if room(a) != room(b) and RANK[room(b)] >= RANK[room(a)]
    ]
    assert not bad, "imports of a room at or above the importer's:\n" + "\n".join(bad)


def test_test_modules_have_unique_basenames():
    # pytest's default import mode puts each test folder on sys.path and imports a test file by its basename,
    # so two folders holding test_inputs.py stop collection of the whole suite (CI failed so once)
    tests = Path(__file__).resolve().parent
    seen = defaultdict(list)
    for p in tests.rglob("test_*.py"):
        seen[p.name].append(str(p.relative_to(tests)))
    assert not {k: v for k, v in seen.items() if len(v) > 1}


# control/'s rooms, as stable-baselines3 keeps them apart: worlds (envs, data) < policies (networks, how an action is
# drawn) < steering (decision-time methods: a strategy over a process) < evaluate < training (algorithms that make
# policies) < registry (methods by name). A sub-room imports its own modules and lower ones only.
CONTROL_RANK = {"worlds": 0, "policies": 1, "steering": 2, "evaluate": 3, "training": 4, "registry": 5}


def control_room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "control" else None


def test_control_rooms_import_only_rooms_below_them():
    mods = modules()
    rooms = {control_room(m) for m in mods} - {None}
    assert not rooms - set(CONTROL_RANK), f"control rooms {sorted(rooms - set(CONTROL_RANK))} have no rank"
    bad = [
        f"{a} -> {b}"
        for a, targets in sorted(import_graph(mods).items())
        for b in sorted(targets)
        if control_room(a) and control_room(b) and control_room(a) != control_room(b)
        and CONTROL_RANK[control_room(b)] >= CONTROL_RANK[control_room(a)]
    ]  # fmt: skip
    assert not bad, "control imports of a room at or above the importer's:\n" + "\n".join(bad)


def test_the_contract_module_holds_only_protocols():
    # search/process.py is what every process and strategy stands on: it may import the ground floor (Usage), never
    # an implementation (it once imported lm.local.LocalGenerator to type LMProcess)
    mods = modules()
    found = sorted(import_graph(mods).get("steerable.search.process", set()) - BASE)
    assert not found, f"search/process.py imports implementations: {found}"
