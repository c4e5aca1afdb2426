"""A griffe extension: Sphinx roles in docstrings become cross-references the site can render.

steerable's docstrings are prose with reST roles (``:class:`~steerable.errors.ConfigError```,
``:func:`opt```). Markdown knows no roles, so before rendering each role becomes
an *optional* autorefs link: a link to the object's API entry where the site
has one, plain code where it does not (a private helper, a third-party class),
and never a warning, so ``mkdocs build --strict`` holds whatever the
docstrings name. ``~`` shows the last name only, as in Sphinx. A short name is
resolved in the scope of the object whose docstring holds it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _full_path(obj: griffe.Object, target: str) -> str:
    """``target`` as a full dotted path, resolved from ``obj``'s scope when it is not one already."""
    target = target.strip().removesuffix("()")
    if target.startswith("steerable"):
        return target
    head, _, rest = target.lstrip(".").partition(".")
    try:
        full = obj.resolve(head)
    except (griffe.NameResolutionError, ValueError, AttributeError, KeyError):
        return target
    return f"{full}.{rest}" if rest else full


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # runs once the whole tree is loaded
        if obj.docstring is None or ":`" not in obj.docstring.value:
            return

        def link(m: re.Match) -> str:
            full = _full_path(obj, m["target"])
            shown = m["target"].strip().split(".")[-1] if m["tilde"] else m["target"].strip()
            return f'<autoref identifier="{html.escape(full)}" optional><code>{html.escape(shown)}</code></autoref>'

        obj.docstring.value = ROLE.sub(link, obj.docstring.value)
