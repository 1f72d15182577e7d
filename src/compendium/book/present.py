"""How an executed chapter reads in the book: boilerplate hidden, warnings and machine paths kept
off the page, a compact "this run" box, "what you will learn" / "what this chapter reproduces"
boxes, a link target on the claims table; the at-a-glance verdict figure; and the scan that
fails a build when a page still shows a warning, a stderr line or a machine path.

Everything here works on the *staged* copy of an executed notebook (``_build/source``): the
executed notebook and its record are never changed."""

from __future__ import annotations

import html as _html
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from compendium.book.claims import MODELLED, VERDICTS, model_outcome, verdict_counts, verdict_label
from compendium.book.environment import threads_and_kernels

# colours by verdict (colour-blind-safe-ish: blue-green for good, orange-red for bad, greys for undecided)
VERDICT_COLOURS = {
    "reproduced": "#1b9e77", "partly": "#a6d96a", "not reproduced": "#d95f02",
    "inconclusive at this scale": "#fdd49e", "modelled": "#7570b3",
    "not comparable at this scale": "#bdbdbd", "not transcribed": "#c6dbef", "not run here": "#f0f0f0",
}
_REPORT_CALL = re.compile(r"^\s*(report\.|report\s*=|scale\s*=|#|$)")
_WARNING_LINE = re.compile(r"(\w*Warning\b|warnings\.warn\(|^\s*warn\()")


def claims_label(chapter: str) -> str:
    return f"claims-{chapter}"


def _tags(cell: Any) -> list[str]:
    return cell.setdefault("metadata", {}).setdefault("tags", [])


def _tag(cell: Any, tag: str) -> None:
    tags = _tags(cell)
    if tag not in tags:
        tags.append(tag)


def _is_report_cell(source: str) -> bool:
    """A cell that only records numbers (``report.number(...)``, ``report.save()``, ...)."""
    if "report" not in source:
        return False
    lines = source.splitlines()
    head = [ln for ln in lines if ln and not ln[0].isspace() and not ln.startswith((")", "]", "}"))]
    return all(_REPORT_CALL.match(ln) for ln in head) or "report.claims_table()" in source


def _scrub_text(text: str, roots: Iterable[str]) -> str:
    for r in roots:
        if r and r != "/":
            text = text.replace(r.rstrip("/") + "/", "").replace(r.rstrip("/"), ".")
    text = re.sub(r"/(?:home|work|tmp|root|Users)/[^\s'\"<>)]*/", "", text)
    return text


def clean_outputs(nb: Any, roots: Iterable[str]) -> None:
    """Drop stderr streams and warning lines; strip machine paths from what remains."""
    roots = sorted({str(r) for r in roots}, key=len, reverse=True)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if out.get("name") == "stderr":
                    continue
                text = "".join(out.get("text", ""))
                lines = [ln for ln in text.splitlines(keepends=True) if not _WARNING_LINE.search(ln)]
                if not "".join(lines).strip():
                    continue
                out["text"] = _scrub_text("".join(lines), roots)
            elif out.get("output_type") in ("execute_result", "display_data"):
                data = out.get("data", {})
                for mime in ("text/plain", "text/html", "text/markdown"):
                    if mime in data:
                        value = data[mime]
                        value = "".join(value) if isinstance(value, list) else value
                        data[mime] = _scrub_text(value, roots)
            kept.append(out)
        cell["outputs"] = kept
    # the downloadable notebook's papermill record names the machine's paths too
    record = nb.metadata.get("papermill") or {}
    for key in ("input_path", "output_path"):
        if isinstance(record.get(key), str):
            record[key] = _scrub_text(record[key], roots)


def hide_boilerplate(nb: Any) -> None:
    """Parameters (the notebook's and papermill's injected cell) removed; cells that only record
    numbers removed (or their input hidden when they show a table); the import cell's input hidden."""
    seen_parameters = False
    first_code_after = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = _tags(cell)
        if "parameters" in tags or "injected-parameters" in tags:
            _tag(cell, "remove-cell")
            seen_parameters = True
            continue
        if seen_parameters and not first_code_after:
            first_code_after = True
            if "hide-input" not in tags and "remove-cell" not in tags:
                _tag(cell, "hide-input")
            continue
        if "solution" in tags:
            continue
        if _is_report_cell(cell.source):
            _tag(cell, "hide-input" if cell.get("outputs") else "remove-cell")


def _md(nbformat: Any, text: str) -> Any:
    return nbformat.v4.new_markdown_cell(text)


def _short(text: str, n: int = 150) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1].rsplit(" ", 1)[0] + " …"


def run_box(record: dict[str, Any]) -> str:
    """One compact admonition: profile, data, scale, wall time (with the CPU and its vector kernels:
    trained numbers repeat bit for bit only on the same ones), commit."""
    env = record.get("environment") or {}
    git = env.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if git.get("dirty") else "")
    data = "; ".join(_short(d.get("description", ""), 120) for d in (record.get("data") or []) if d.get("description"))
    cpu_record = env.get("cpu") or {}
    cpu = ", ".join(filter(None, [_short(cpu_record["model"], 60) if cpu_record.get("model") else "",
                                  threads_and_kernels(cpu_record)]))
    device = (record.get("device") or {}).get("used") if isinstance(record.get("device"), dict) else None
    rows = [f"**profile** `{record.get('profile')}`",
            f"**wall time** {record.get('wall_time_s', '?')} s" + (f" on {device}" if device else "")
            + (f" ({cpu})" if cpu else ""),
            f"**commit** `{commit}`"]
    out = [":::{admonition} This run", ":class: note", "",
           " · ".join(rows), ""]
    if data:
        out += [f"**data** {data}", ""]
    if record.get("scale"):
        out += [f"**scale** {_short(record['scale'], 300)}", ""]
    threads = f" --threads {cpu_record['torch_threads']}" if cpu_record.get("torch_threads") else ""
    out += [f"Re-run it: `compendium run {record.get('chapter')} --profile {record.get('profile')}{threads}` (the "
            "numbers repeat bit for bit only at the same thread count and vector kernels); every number "
            "on this page comes from that run's record.", ":::"]
    return "\n".join(out)


def opening_boxes(chapter: str, goals: list[str], record: dict[str, Any] | None) -> str:
    out = []
    if goals:
        out += [":::{admonition} What you will learn", ":class: tip", "",
                *[f"- {g}" for g in goals], ":::", ""]
    claims = (record or {}).get("claims") or []
    if claims:
        out += [":::{admonition} What this chapter reproduces", ":class: seealso", "",
                f"The paper's claims and this build's verdicts ({{ref}}`the claims table <{claims_label(chapter)}>`):", ""]
        out += [f"- **{verdict_label(c)}** — {_short(c.get('text', c['claim']))}" for c in claims]
        out += [":::"]
    return "\n".join(out)


def present_chapter(nb_path: Path, chapter: str, record: dict[str, Any] | None, goals: list[str],
                    roots: Iterable[str]) -> None:
    """Rewrite a staged executed chapter for reading (see the module docstring)."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    hide_boilerplate(nb)
    clean_outputs(nb, roots)
    # a link target on the claims table (the scoreboard and the opening box link to it)
    at_claims = next((i for i, cell in enumerate(nb.cells)
                      if cell.cell_type == "code" and "report.claims_table()" in cell.source), len(nb.cells) - 1)
    nb.cells.insert(max(at_claims, 1), _md(nbformat, f"({claims_label(chapter)})=\n**The paper's claims beside ours** "
                                                     f"(rules: `data/papers/{chapter}.yaml`; every chapter on the "
                                                     f"{{doc}}`scoreboard <../scoreboard>`)."))
    # the opening: title, then the boxes; the "this run" box after the introduction
    first = nb.cells[0]
    if first.cell_type == "markdown" and first.source.lstrip().startswith("# "):
        title, _, rest = first.source.lstrip().partition("\n")
        boxes = opening_boxes(chapter, goals, record)
        first.source = title + "\n\n" + (boxes + "\n\n" if boxes else "") + rest.lstrip("\n")
        if record:
            at = 1
            while at < len(nb.cells) and nb.cells[at].cell_type == "markdown":
                at += 1
            nb.cells.insert(at, _md(nbformat, run_box(record)))
    nbformat.write(nb, nb_path)


# ---------------------------------------------------------------------------------------------
# the at-a-glance figure


def glance_figure(path: Path, chapters: list[str], titles: dict[str, str], records: dict[str, Any]) -> None:
    """Chapters (rows) × claims (cells), each cell coloured by its verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    claims_of = {c: (records.get(c) or {}).get("claims") or [] for c in chapters}
    rows = [(c, [cl["verdict"] for cl in claims_of[c]]) for c in chapters]
    refuted = {(c, x) for c in chapters for x, cl in enumerate(claims_of[c]) if model_outcome(cl) == "does not hold"}
    width = max([len(v) for _, v in rows] + [1])
    def short(c: str) -> str:  # "STBP-tdBN: going deeper ..." -> "STBP-tdBN"
        t = titles.get(c, c).split(":")[0].strip()
        return t if len(t) <= 30 else t[:29].rsplit(" ", 1)[0] + " …"

    fig, ax = plt.subplots(figsize=(min(2.4 + 0.5 * width, 9), 0.4 * len(rows) + 1.2), dpi=120)
    for y, (c, verdicts) in enumerate(rows):
        for x, v in enumerate(verdicts):
            # a modelled claim the model refutes is hatched: "modelled" must not read as a success
            ax.add_patch(Rectangle((x, y), 0.92, 0.84, facecolor=VERDICT_COLOURS.get(v, "#ffffff"), edgecolor="#555555",
                                   lw=0.5, hatch="xxx" if (c, x) in refuted else None))
        if not verdicts:
            ax.text(0.05, y + 0.42, "not run by this build", va="center", fontsize=8, color="#555555")
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([y + 0.42 for y in range(len(rows))])
    ax.set_yticklabels([short(c) for c, _ in rows], fontsize=10)
    ax.set_xticks([x + 0.46 for x in range(width)])
    ax.set_xticklabels([str(x + 1) for x in range(width)], fontsize=9)
    ax.set_xlabel("claim (in the chapter's order)", fontsize=9)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    used = [v for v in VERDICTS if any(v in vs for _, vs in rows)]
    handles = [Patch(facecolor=VERDICT_COLOURS[v], edgecolor="#555555", label=v) for v in used]
    if refuted:
        handles.insert(used.index(MODELLED) + 1, Patch(facecolor=VERDICT_COLOURS[MODELLED], edgecolor="#555555",
                                                       hatch="xxx", label="modelled: does not hold"))
    ax.legend(handles=handles,
              loc="upper center", bbox_to_anchor=(0.5, -0.55 / (0.4 * max(len(rows), 1))), ncol=min(3, len(handles) or 1),
              fontsize=9, frameon=False, handlelength=1.2, columnspacing=1.0)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def chapter_summaries(chapters: list[str], titles: dict[str, str], records: dict[str, Any], doc_prefix: str) -> list[str]:
    """One line per chapter: its verdict counts, linking to the chapter's claims table."""
    lines = []
    for c in chapters:
        rec = records.get(c)
        if not rec:
            continue
        summary = verdict_counts(rec.get("claims", [])) or "no claims"
        lines.append(f"- {{ref}}`{titles.get(c, c)} <{claims_label(c)}>` ({{doc}}`chapter <{doc_prefix}{c}>`): "
                     f"{summary}.")
    return lines


def glance_section(chapters: list[str], titles: dict[str, str], records: dict[str, Any], image: str,
                   doc_prefix: str, name: str, heading: str = "## At a glance") -> str:
    return "\n".join([
        heading, "",
        f"```{{figure}} {image}", f":name: {name}", ":alt: a grid of chapters by claims, each cell coloured by the claim's verdict",
        ":width: 100%", "",
        "Every claim of every chapter, coloured by this build's verdict (rows: chapters; cells: the chapter's claims "
        "in order).", "```", "",
        *chapter_summaries(chapters, titles, records, doc_prefix), "",
    ])


# ---------------------------------------------------------------------------------------------
# the page scan


_PROBLEMS = [
    (re.compile(r"\b\w+Warning\b|warnings\.warn\("), "a Python warning"),  # UserWarning, TqdmWarning, ...
    (re.compile(r"/(?:home|work|tmp|root|Users)/[\w.+-]+"), "an absolute machine path"),
    (re.compile(r'class="[^"]*\boutput\s+stderr\b'), "a stderr output"),
    (re.compile(r"Traceback \(most recent call last\)"), "a traceback"),
]


def page_problems(html_dir: Path) -> list[str]:
    """Every warning, stderr output, traceback or absolute machine path on a rendered page
    (scripts, styles and the search index excluded)."""
    found = []
    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.parts or page.name in ("search.html", "genindex.html"):
            continue
        text = page.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
        visible = _html.unescape(re.sub(r"<[^>]+>", " ", text))
        for pattern, what in _PROBLEMS:
            hay = text if "stderr" in what else visible
            m = pattern.search(hay)
            if m:
                start = max(0, m.start() - 60)
                found.append(f"{page.relative_to(html_dir)}: {what}: …{' '.join(hay[start:m.end() + 40].split())}…")
    return found


def load_course(root: Path) -> dict[str, Any]:
    path = root / "book" / "course.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
