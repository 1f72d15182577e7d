import ast

import nbformat
import pytest

from compendium.chapters import available_chapters, load_spec
from compendium.params import ChapterSpec, ParameterError, ParamSpec


def test_coercion_reads_command_line_text():
    assert ParamSpec("e", "int").coerce("3") == 3
    assert ParamSpec("lr", "float").coerce("1e-3") == pytest.approx(1e-3)
    assert ParamSpec("lr", "float").coerce(2) == 2.0
    assert ParamSpec("b", "bool").coerce("true") is True
    assert ParamSpec("s", "str", choices=("a", "b")).coerce("b") == "b"
    assert ParamSpec("n", "int", nullable=True).coerce(None) is None


@pytest.mark.parametrize("spec, value, words", [
    (ParamSpec("epochs", "int", min=1), "0", ["epochs", ">= 1"]),
    (ParamSpec("epochs", "int"), "2.5", ["epochs", "integer"]),
    (ParamSpec("epochs", "int"), True, ["epochs", "integer"]),
    (ParamSpec("lr", "float", max=1.0), "3", ["lr", "<= 1.0"]),
    (ParamSpec("lr", "float"), "nan", ["lr", "finite"]),
    (ParamSpec("flag", "bool"), "yes please", ["flag", "true or false"]),
    (ParamSpec("mode", "str", choices=("a", "b")), "c", ["mode", "one of"]),
    (ParamSpec("n", "int"), None, ["n", "null"]),
])
def test_bad_values_name_the_parameter(spec, value, words):
    with pytest.raises(ValueError) as err:
        spec.coerce(value)
    for w in words:
        assert w in str(err.value)


def test_resolve_reports_every_problem_at_once(project):
    spec = load_spec(project, "primer")
    with pytest.raises(ParameterError) as err:
        spec.resolve("quick", {"epohcs": 3, "T": 0, "reset": "sideways"})
    msg = str(err.value)
    assert "unknown parameter 'epohcs'" in msg and "did you mean 'epochs'" in msg
    assert "'T' must be >= 1" in msg
    assert "'reset' must be one of" in msg
    assert len(err.value.problems) == 3


def test_unknown_profile_is_refused(project):
    with pytest.raises(ParameterError, match="unknown profile"):
        load_spec(project, "primer").resolve("huge")


def test_profiles_layer_over_default(project):
    spec = load_spec(project, "primer")
    quick = spec.resolve("quick")
    assert set(quick) == set(spec.parameters)
    for k, v in spec.profiles["quick"].items():
        assert quick[k] == v
    assert quick["lr"] == spec.profiles["default"]["lr"]


def test_spec_must_declare_all_three_profiles(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("id: x\ntitle: X\nparameters:\n  a: {type: int}\nprofiles:\n  default: {a: 1}\n  quick: {}\n")
    with pytest.raises(ValueError, match="paper"):
        ChapterSpec.load(p)


def test_default_profile_must_set_every_parameter(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("id: x\ntitle: X\nparameters:\n  a: {type: int}\n  b: {type: int}\n"
                 "profiles:\n  default: {a: 1}\n  quick: {}\n  paper: {}\n")
    with pytest.raises(ValueError, match="every parameter"):
        ChapterSpec.load(p)


def _parameters_cell(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{nb_path}: exactly one cell must be tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{nb_path}: the parameters cell holds assignments only"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values, nb


@pytest.mark.parametrize("chapter", ["primer", "tdbn", "msresnet", "h2learn", "stfn", "memristor", "calibration", "adversarial", "compression", "hybrid", "dashnet"])
def test_chapter_in_book_list(project, chapter):
    assert chapter in available_chapters(project)


def test_notebooks_match_their_declared_default_profile(project):
    for chapter in available_chapters(project):
        spec = load_spec(project, chapter)
        values, nb = _parameters_cell(project.notebook(chapter))
        assert values == spec.profiles["default"], f"{chapter}: parameters cell differs from the default profile"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{chapter}: source notebook has outputs"
        assert project.claims_file(chapter).is_file()


def test_papermill_sees_every_declared_parameter(project):
    # papermill parses the parameters cell itself; a comment it cannot parse (e.g. one with "=")
    # silently drops that parameter, and `-p name value` would then be ignored with a warning
    import papermill as pm

    for chapter in available_chapters(project):
        seen = set(pm.inspect_notebook(str(project.notebook(chapter))))
        declared = set(load_spec(project, chapter).parameters)
        assert seen == declared, f"{chapter}: papermill sees {sorted(seen ^ declared)} differently"
