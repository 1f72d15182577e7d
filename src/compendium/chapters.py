"""The chapters of the book: which exist, in which order, and their declared specs."""

from __future__ import annotations

import json
from typing import Any

import yaml

from compendium.params import ChapterSpec
from compendium.project import Project


def toc_chapters(project: Project) -> list[str]:
    """Chapter ids in book order, as ``_toc.yml`` lists them (``book/chapters/<id>``)."""
    with open(project.root / "_toc.yml", encoding="utf-8") as fh:
        toc = yaml.safe_load(fh)
    ids: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith("book/chapters/"):
                ids.append(f.split("/")[-1].removesuffix(".ipynb"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return ids


def available_chapters(project: Project) -> list[str]:
    """Chapters with a notebook and a spec, in book order (then any others, sorted)."""
    have = {p.stem for p in project.notebooks_dir.glob("*.ipynb") if project.chapter_spec(p.stem).is_file()}
    ordered = [c for c in toc_chapters(project) if c in have]
    return ordered + sorted(have - set(ordered))


def load_spec(project: Project, chapter: str) -> ChapterSpec:
    path = project.chapter_spec(chapter)
    if not path.is_file() or not project.notebook(chapter).is_file():
        known = ", ".join(available_chapters(project)) or "none"
        raise KeyError(f"no chapter '{chapter}' (known chapters: {known})")
    return ChapterSpec.load(path)


def last_record(project: Project, chapter: str) -> dict[str, Any] | None:
    path = project.record(chapter)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
