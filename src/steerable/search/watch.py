"""Watching a run as it happens: a process and a scorer that report every step, score and selection.

A strategy sees only the :class:`~steerable.search.process.Process` contract,
so what it did to its rows is visible at that contract: ``init`` makes rows,
``propose`` extends them, the scorer scores some of them, ``select`` keeps,
drops and forks them (a particle filter's resampling, a beam's pruning), and
``concat`` joins states (a tree's pool). :class:`Watch` wraps a process and a
scorer and hands one small JSON-ready event to ``emit`` for each of these
calls, so the playground (and any other observer) draws any strategy of any
family without the strategy knowing it is watched. Nothing is recomputed: the
events carry what the calls returned, and previews only where the family's
``show`` gives them without spending model calls.

Events (every one has ``type`` and ``state``, a small number naming the state
object it is about; a state dropped by the strategy may have its number's
object id reused later):

- ``{"type": "init", "state": s, "rows": n}``
- ``{"type": "step", "state": s, "step": k, "rows": n, "done": [...], "previews": [...]}``: after the
  ``k``-th ``propose`` (or ``complete``) of the run; ``previews`` only with ``show``
- ``{"type": "score", "state": s, "step": k, "rows": [...], "scores": [...]}``: the rows of the last previewed
  state that the scorer scored (``-1`` where a sample is none of that preview's rows; rows with equal text are
  matched one to one, the very object first)
- ``{"type": "select", "state": s, "from": f, "parents": [...]}``: row ``i`` of ``s`` is row ``parents[i]`` of ``f``
- ``{"type": "concat", "state": s, "from": [f, ...]}``

``emit`` runs inside the strategy's thread; an exception it raises stops the
run (how a server stops a run whose client has gone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Event = dict[str, Any]


def _same(a: Any, b: Any) -> bool:
    """Whether scored sample ``a`` is preview row ``b``: the same object, a view of one tensor row, or equal text."""
    if a is b:
        return True
    ptr = getattr(a, "data_ptr", None)
    if ptr is not None and hasattr(b, "data_ptr"):
        return a.data_ptr() == b.data_ptr() and a.shape == b.shape
    return isinstance(a, str) and a == b


class Watch:
    """One run's observer: wraps its process and scorer (:meth:`process`, :meth:`scorer`) and numbers its states.

    ``show(process, state)`` gives each row's preview as JSON-ready values,
    or None; it must not spend model calls (a diffusion family shows the
    x0-prediction its last step already computed).
    """

    def __init__(self, emit: Callable[[Event], None], show: Callable[[Any, Any], list | None] | None = None):
        self.emit, self.show = emit, show
        self.steps = 0
        self._ids: dict[int, int] = {}
        self._preview: tuple[int, Sequence[Any]] | None = None  # (state, samples) the strategy last read

    def sid(self, state: Any) -> int:
        return self._ids.setdefault(id(state), len(self._ids))

    def process(self, process: Any) -> WatchedProcess:
        return WatchedProcess(process, self)

    def scorer(self, scorer: Any) -> WatchedScorer | None:
        return None if scorer is None else WatchedScorer(scorer, self)

    def stepped(self, process: Any, state: Any) -> None:
        self.steps += 1
        event: Event = {
            "type": "step",
            "state": self.sid(state),
            "step": self.steps,
            "rows": process.size(state),
            "done": [bool(d) for d in process.is_terminal(state)],
        }
        shown = self.show(process, state) if self.show is not None else None
        if shown is not None:
            event["previews"] = list(shown)
        self.emit(event)

    def scored(self, samples: Sequence[Any], scores: Sequence[float]) -> None:
        state, rows = -1, []
        if self._preview is not None:
            state, previewed = self._preview
            taken: set[int] = set()
            for s in samples:
                # the very object first, then an equal row not matched yet: rows with the same text (particles
                # resampled from one parent) each get their own score, not all the first such row's
                j = next((j for j, p in enumerate(previewed) if j not in taken and s is p), None)
                if j is None:
                    j = next((j for j, p in enumerate(previewed) if j not in taken and _same(s, p)), -1)
                taken.add(j)
                rows.append(j)
        else:
            rows = [-1] * len(samples)
        self.emit(
            {"type": "score", "state": state, "step": self.steps, "rows": rows, "scores": [float(x) for x in scores]}
        )


class WatchedProcess:
    """A process that reports to its :class:`Watch`; every other attribute is the wrapped process's own."""

    def __init__(self, inner: Any, watch: Watch):
        self._inner, self._watch = inner, watch

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name == "complete":  # a process that runs every row to its end in one call: that is one step too

            def complete(state: Any) -> Any:
                out = value(state)
                self._watch.stepped(self._inner, state)
                return out

            return complete
        return value

    def init(self, cond: Any, n: int, seed: int | None = None) -> Any:
        state = self._inner.init(cond, n, seed)
        self._watch.emit({"type": "init", "state": self._watch.sid(state), "rows": self._inner.size(state)})
        return state

    def propose(self, state: Any, *args: Any, **kwargs: Any) -> None:
        self._inner.propose(state, *args, **kwargs)
        self._watch.stepped(self._inner, state)

    def preview(self, state: Any) -> Sequence[Any]:
        out = self._inner.preview(state)
        self._watch._preview = (self._watch.sid(state), out)
        return out

    def select(self, state: Any, rows: Sequence[int]) -> Any:
        new = self._inner.select(state, rows)
        w = self._watch
        w.emit({"type": "select", "state": w.sid(new), "from": w.sid(state), "parents": [int(r) for r in rows]})
        return new

    def concat(self, states: Sequence[Any]) -> Any:
        new = self._inner.concat(states)
        w = self._watch
        w.emit({"type": "concat", "state": w.sid(new), "from": [w.sid(s) for s in states]})
        return new


class WatchedScorer:
    """A scorer that reports each call's scores, matched to the rows of the state the strategy last previewed."""

    def __init__(self, inner: Any, watch: Watch):
        self._inner, self._watch = inner, watch
        self.range = inner.range

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def score(self, conds: Sequence[Any], samples: Sequence[Any]) -> list[float]:
        out = self._inner.score(conds, samples)
        self._watch.scored(samples, out)
        return out
