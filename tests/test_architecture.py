"""Tests of the architecture: the engine imports nothing above it, and a new component is its module plus one node."""
import ast
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
    with pytest.raises(ConfigError, match=r"--from trian: unknown component; expected one of ingest, statistics"):
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
