"""Write one API reference page per module of ``steerable`` at build time (mkdocs-gen-files).

The pages are found by walking ``src/steerable`` on disk, not listed by hand,
so a module that moves or appears is documented at the next build. Packages
without an ``__init__.py`` (``steerable.rl``) are walked like any other.
Nothing here is written to the repository: gen-files keeps the pages in the
build only.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

SRC = Path(__file__).resolve().parents[2] / "src"
nav = mkdocs_gen_files.Nav()

for path in sorted((SRC / "steerable").rglob("*.py")):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__main__" or any(p.startswith("_") and p != "__init__" for p in parts):
        continue
    page = Path("reference", "api", *parts).with_suffix(".md")
    if parts[-1] == "__init__":
        parts = parts[:-1]
        page = page.with_name("index.md")
    ident = ".".join(parts)
    nav[tuple(parts)] = page.relative_to("reference/api").as_posix()
    with mkdocs_gen_files.open(page, "w") as f:
        f.write(f"::: {ident}\n")
    mkdocs_gen_files.set_edit_path(page, path.relative_to(SRC.parent))

with mkdocs_gen_files.open("reference/api/SUMMARY.md", "w") as f:
    f.writelines(nav.build_literate_nav())
