"""Progress that suits where it runs: a tqdm bar on a terminal, plain lines elsewhere
(papermill, CI logs, the rendered book), so that logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def import_quietly_for_pyg() -> None:
    """Import ``tqdm.auto`` with its notice about ipywidgets silenced, before PyTorch Geometric
    is imported: PyG imports ``tqdm.auto`` at import time, and in a Jupyter kernel without
    ipywidgets that prints a ``TqdmWarning`` (text bars instead of widgets) on the graph
    chapter's first cell. This package draws no bar through PyG, so the notice is only noise;
    other warnings pass as before. Call it before the first ``import torch_geometric``."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        importlib.import_module("tqdm.auto")


def interactive() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", lines: int = 4,
             enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar (terminal) or about ``lines`` plain progress lines."""
    if not enabled:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if interactive():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, leave=False)
        return
    start = time.time()
    every = max(1, (total or 0) // max(1, lines)) if total else None
    for i, item in enumerate(iterable, 1):
        yield item
        if every and (i % every == 0 or i == total):
            print(f"{desc}: {i}/{total} ({time.time() - start:.1f} s)", flush=True)
