"""Tests of the architecture: the engine imports nothing above it, and a new component is its module plus one node."""
import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import write_dataset
from pipeline.config import Config, override
from pipeline.definition import PRODUCTION
from engine.artifacts import Artifact
from components.evaluate import Evaluation
from components.train import Model
from engine.component import Component
from engine.dag import Node, Pipeline
from engine.errors import ConfigError
from engine.metadata import Metadata
from pipeline.local import execute

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in ENGINE.glob("*.py")))
def test_the_engine_imports_only_itself_of_the_project(module):
    project = {m for m in _imports(ENGINE / module) if m.split(".")[0] in ("pipeline", "components", "benchmarks")}
    assert all(m == "engine" or m.startswith("engine.") for m in project), project


def test_order_slicing_and_lineage_keys_come_from_the_declaration():
    assert PRODUCTION.order == ("ingest", "statistics", "schema", "validate", "tune", "train", "evaluate", "push")
    assert PRODUCTION.between("tune", "evaluate") == ("tune", "train", "evaluate")
    assert PRODUCTION.output_kinds()[-2:] == ("Evaluation", "PushedModel")
    with pytest.raises(ConfigError, match=r"--from trian: unknown component; did you mean train\? expected one of "
                                          r"ingest, statistics"):
        PRODUCTION.between("trian", None)
    with pytest.raises(ConfigError, match="--from push --to ingest: push comes after ingest"):
        PRODUCTION.between("push", "ingest")


def test_a_declaration_is_checked_when_made():
    ingest = PRODUCTION.node["ingest"]
    with pytest.raises(ConfigError, match="pipeline bad: train reads schema, which is not an earlier node"):
        Pipeline("bad", (ingest, PRODUCTION.node["train"], PRODUCTION.node["push"]))
    wrong = Node(PRODUCTION.node["train"].component, inputs=("ingest", "ingest", "ingest"))
    with pytest.raises(ConfigError, match="train cannot take ingest's Examples"):
        Pipeline("bad", (ingest, wrong))


@dataclass(frozen=True)
class ModelCard(Artifact):
    """A new artifact type, declared where its component is."""

    accuracy: float
    kind: ClassVar[str] = "ModelCard"


def _card(model: Model, evaluation: Evaluation, *, out_dir: Path, title: str) -> ModelCard:
    (out_dir / "card.md").write_text(f"# {title}\naccuracy {evaluation.accuracy:.4f}\n")
    return ModelCard(uri=str(out_dir), fingerprint="", accuracy=evaluation.accuracy)


CARD = Component(name="card", fn=_card, inputs=(Model, Evaluation), output=ModelCard)


def test_a_new_component_is_its_module_and_one_node(tmp_path):
    """A model card between evaluate and push: nothing else of the project changes, and the run's order,
    caching, summary, report and metadata take it in."""
    node = Node(CARD, inputs=("train", "evaluate"), params=lambda cfg, out, store: {"title": cfg.data.dataset},
                summary=lambda card, info: {"card": card and {"accuracy": card.accuracy}},
                report=lambda summary, out: ("card", "Model card", f"<p>{summary['card']}</p>"))
    nodes = PRODUCTION.nodes
    with_card = Pipeline("with-card", nodes[:-1] + (node, nodes[-1]), final_status="pushed")
    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64})
    cfg = override(Config(), root=str(tmp_path / "root"), **{"data.dataset": f"idx:{data}", "tune.enabled": False,
                                                              "train.epochs": 1, "evaluate.min_accuracy": 0.0})
    summary = execute(cfg, pipeline=with_card)
    assert summary["status"] == "pushed", summary["error"]
    assert list(summary["components"]) == list(with_card.order)
    assert summary["card"]["accuracy"] == summary["evaluation"]["accuracy"]
    card = Path(summary["components"]["card"]["uri"]) / "card.md"
    assert card.read_text().startswith(f"# idx:{data}")
    assert '<section id="card"><h2>Model card</h2>' in Path(summary["report"]).read_text()
    again = execute(cfg, pipeline=with_card)
    assert {c["state"] for c in again["components"].values()} == {"cached"}
    runs = Metadata.open(cfg).runs(cfg.root)
    assert runs[-1]["components"]["card"] == "cached" and runs[0]["components"]["card"] == "executed"


TOY = '''"""A toy component declared outside the project: a model card with a title of its own."""
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from components.evaluate import Evaluation
from engine.artifacts import Artifact
from engine.component import Component
from engine.settings import param


@dataclass(frozen=True)
class Card(Artifact):
    title: str
    kind: ClassVar[str] = "ToyCard"


@dataclass(frozen=True)
class CardConfig:
    """The model card."""

    title: str = param("untitled", flag="--card-title", help="the model card's title")
    width: int = param(80, low=20, high=200)


def card(evaluation: Evaluation, *, out_dir: Path, title: str, width: int) -> Card:
    (out_dir / "card.md").write_text(f"# {title}\\naccuracy {evaluation.accuracy:.4f}\\n"[:width])
    return Card(uri=str(out_dir), fingerprint="", title=title)


COMPONENT = Component(name="card", fn=card, inputs=(Evaluation,), output=Card, settings=CardConfig,
                      params=lambda cfg, out, metadata: {"title": cfg.card.title, "width": cfg.card.width},
                      summary=lambda c, info: {"card": c and {"title": c.title}},
                      report=lambda summary, out: ("card", "Model card", f"<p>{summary['card']['title']}</p>"))
'''


def test_a_new_parameter_is_declared_once_beside_its_component(tmp_path, capsys):
    """A component in a module of its own with a new setting: its YAML key, flag, `--help` line, summary
    entry and report section appear, and no file of the project is edited."""
    import importlib.util

    from pipeline import cli
    from pipeline.config import config_for, load
    from pipeline.flags import run_config

    (tmp_path / "toy_card.py").write_text(TOY)
    spec = importlib.util.spec_from_file_location("toy_card", tmp_path / "toy_card.py")
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    nodes = PRODUCTION.nodes
    with_card = Pipeline("with-card", nodes[:-1] + (Node(toy.COMPONENT, inputs=("evaluate",)), nodes[-1]),
                         final_status="pushed")
    # The YAML key, with the limits the setting declares.
    yaml_file = tmp_path / "card.yaml"
    yaml_file.write_text("card:\n  title: From YAML\n  width: 60\n")
    assert load(yaml_file, config_for(with_card)).card == toy.CardConfig(title="From YAML", width=60)
    yaml_file.write_text("card:\n  width: 5\n")
    with pytest.raises(ConfigError, match="config 'card.width': expected an integer at least 20 and at most 200, got 5"):
        load(yaml_file, config_for(with_card))
    # The flag and its help line; the production pipeline's command line does not have it.
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"], pipeline=with_card)
    assert re.search(r"--card-title CARD_TITLE\s+the model card's title \(default: untitled\)", capsys.readouterr().out)
    with pytest.raises(SystemExit) as usage:
        cli.main(["run", "--card-title", "x"])
    assert usage.value.code == 2 and "unrecognized arguments: --card-title x" in capsys.readouterr().err
    # The API's keyword, the run's summary entry, its recorded config and its report section.
    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64})
    cfg = run_config(None, tmp_path / "root", None, config_for(with_card), dataset=f"idx:{data}", no_tune=True,
                     epochs=1, min_accuracy=0.0, card_title="Digits")
    summary = execute(cfg, pipeline=with_card)
    assert summary["status"] == "pushed", summary["error"]
    assert summary["card"] == {"title": "Digits"} and summary["config"]["card"] == {"title": "Digits", "width": 80}
    run_dir = Path(summary["report"]).parent
    assert "card:\n  title: Digits\n  width: 80\n" in (run_dir / "config.yaml").read_text()
    assert '<section id="card"><h2>Model card</h2><p>Digits</p></section>' in Path(summary["report"]).read_text()
    with pytest.raises(ConfigError, match="unknown argument 'card_title'"):
        run_config(None, tmp_path / "root", None, card_title="Digits")  # the production pipeline has no card


def test_every_run_flag_is_in_the_readme_flag_table_and_every_row_is_a_flag():
    """The README's flag table is checked against the flags the settings declare."""
    from pipeline.flags import declared

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = set(re.findall(r"^\| `(--[a-z-]+)[^`]*` \|", readme, flags=re.M))
    derived = {flag for flag, _, _ in declared()}
    own = {"--root", "--beam-arg", "--no-cache", "--from", "--to", "--no-wait", "--run-id", "--json", "--config"}
    assert derived <= table, f"flags missing from the README's table: {sorted(derived - table)}"
    synopsis = set(re.findall(r"\[(--[a-z-]+)", readme.split("## The `run` command")[1].split("```")[1]))
    assert derived <= synopsis, f"flags missing from the README's synopsis: {sorted(derived - synopsis)}"
    assert table - own <= derived, f"README rows that are no flag: {sorted(table - own - derived)}"


ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ("false_positive_rate", "max_regression", "baseline_broken", "max_trials", "min_accuracy", "tune_budget")


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).glob("*.py"))


def test_the_layers_hold_across_the_tree():
    """Settings are spelled only in components/; the engine names no component and no domain artifact;
    components import only the engine and each other; the API does not go through the CLI; no module is over
    300 lines."""
    spelled = [f"{p.relative_to(ROOT)}: {word}" for p in _modules("pipeline", "engine")
               for word in SETTINGS for form in (word, word.replace("_", "-"))
               if re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", p.read_text())]
    assert spelled == []
    named = [f"{p.name}: {m.group(0)}" for p in _modules("engine") for m in re.finditer(
        r"[\"'](ingest|statistics|schema|validate|tune|train|evaluate|push)[\"']|PushedModel|class (Examples|Model|"
        r"Evaluation)\b", p.read_text())]
    assert named == []
    upward = [f"{p.name}: {m}" for p in _modules("components") for m in _imports(p)
              if m.split(".")[0] == "pipeline"]
    assert upward == []
    assert not {m for m in _imports(ROOT / "pipeline" / "api.py") if m in ("pipeline.cli", "pipeline.parser")}
    long = [f"{p.relative_to(ROOT)}: {n}" for p in _modules("pipeline", "components", "engine")
            if (n := len(p.read_text().splitlines())) > 300]
    assert long == []
