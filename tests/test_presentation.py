"""How a staged chapter reads: boilerplate hidden, stderr/warnings/machine paths kept off the page,
the opening boxes and the claims link target; and the page scan that fails a strict build."""

from __future__ import annotations

import nbformat

from compendium.book.present import (claims_label, clean_outputs, glance_figure, hide_boilerplate, page_problems,
                                     present_chapter)


def _nb():
    nb = nbformat.v4.new_notebook()
    md = nbformat.v4.new_markdown_cell
    code = nbformat.v4.new_code_cell
    nb.cells = [md("# Title\n\nIntro."), code("x = 1"), code("x = 2"), code("import numpy as np"),
                code("y = x"), code("report.number('y', y)\nreport.save();"), code("report.claims_table()")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[2].metadata["tags"] = ["injected-parameters"]
    nb.cells[4].outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="/work/main/.venv/tqdm/auto.py:21: TqdmWarning: x\n"),
        nbformat.v4.new_output("stream", name="stdout", text="loaded /home/me/data/mnist.gz\n"
                                                             "/a/b.py:3: UserWarning: careful\nresult 3\n")]
    nb.cells[6].outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "table"})]
    return nb


def test_boilerplate_is_hidden_and_outputs_are_cleaned():
    nb = _nb()
    hide_boilerplate(nb)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert "remove-cell" in tags[1] and "remove-cell" in tags[2]  # parameters, injected parameters
    assert "hide-input" in tags[3]  # imports folded
    assert "remove-cell" in tags[5] and "hide-input" in tags[6]  # records removed; the claims table shown
    assert not {"remove-cell", "hide-input"} & set(tags[4])  # science stays
    nb.metadata["papermill"] = {"input_path": "/work/main/notebooks/demo.ipynb", "output_path": "/work/main/_build/runs/x/demo.ipynb"}
    clean_outputs(nb, ["/work/main"])
    outs = nb.cells[4].outputs
    assert [o.name for o in outs] == ["stdout"]
    assert "Warning" not in outs[0].text and "/home/" not in outs[0].text and "result 3" in outs[0].text
    assert nb.metadata["papermill"]["input_path"] == "notebooks/demo.ipynb"  # the download names no machine path
    assert "/work/" not in nb.metadata["papermill"]["output_path"]


def test_chapter_opens_with_boxes_and_a_run_box_and_links_its_claims(tmp_path):
    path = tmp_path / "demo.ipynb"
    nbformat.write(_nb(), path)
    record = {"chapter": "demo", "profile": "quick", "wall_time_s": 3.2, "scale": "tiny",
              "environment": {"git": {"commit": "abcdef1234567", "dirty": False}},
              "data": [{"description": "MNIST, 100 images"}],
              "claims": [{"claim": "c1", "text": "y is twice x", "verdict": "reproduced"}]}
    present_chapter(path, "demo", record, ["a goal"], ["/work/main"])
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0].source
    assert first.startswith("# Title") and "What you will learn" in first and "a goal" in first
    assert "What this chapter reproduces" in first and "**reproduced** — y is twice x" in first
    box = next(c.source for c in nb.cells if "This run" in c.source)
    assert "`quick`" in box and "3.2 s" in box and "abcdef1234" in box and "MNIST, 100 images" in box
    label = next(i for i, c in enumerate(nb.cells) if f"({claims_label('demo')})=" in c.source)
    assert "report.claims_table()" in nb.cells[label + 1].source


def test_page_scan_finds_warnings_stderr_and_machine_paths(tmp_path):
    good = tmp_path / "good.html"
    good.write_text("<html><body><div class='admonition warning'><p>Stale</p></div>"
                    "<script>var p='/work/x';</script><p>accuracy 91 %</p></body></html>")
    assert page_problems(tmp_path) == []
    (tmp_path / "bad.html").write_text("<p>/work/main/.venv/tqdm/auto.py:21: TqdmWarning: IProgress not found</p>"
                                       "<div class=\"output stderr\"><pre>x</pre></div>")
    found = page_problems(tmp_path)
    assert any("warning" in f for f in found) and any("machine path" in f for f in found)
    assert any("stderr" in f for f in found)


def test_glance_figure_draws_every_chapter(tmp_path):
    records = {"a": {"claims": [{"verdict": "reproduced"}, {"verdict": "not run here"}]}, "b": None}
    glance_figure(tmp_path / "g.png", ["a", "b"], {"a": "Chapter A", "b": "Chapter B"}, records)
    assert (tmp_path / "g.png").stat().st_size > 1000
