"""The import rule: every dependency points down the layers.

common (errors, db helpers, JSON safety) <- features <- model <- signals <- mlsignals (settings,
factories, in-process pipeline, backtest, CLI) <- serve_app. The stages never import the
application layer, Serve or Ray; only the CLI imports its commands. Imports inside functions and
under TYPE_CHECKING count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("common", "features", "model", "signals", "mlsignals", "serve_app")
RANK = {name: i for i, name in enumerate(LAYERS)}
STAGES = ("common", "features", "model", "signals")
STAGE_BANNED = ("ray",)  # Serve is ray.serve
CLI = "mlsignals/cli.py"


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import statement in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            # `from pkg import sub` may name a submodule: check both pkg and pkg.sub
            out += [(node.lineno, mod)] + [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def violations(path: Path, root: Path = ROOT) -> list[str]:
    rel = path.relative_to(root).as_posix()
    layer = rel.split("/")[0]
    bad: list[str] = []
    seen: set[int] = set()
    for line, mod in _imports(path, root):
        if line in seen:  # one finding per import statement
            continue
        top = mod.split(".")[0]
        where = f"{rel}:{line} imports {mod}"
        if top in RANK and RANK[top] > RANK[layer]:
            bad.append(f"{where} ({top} is above {layer})")
        elif layer in STAGES and top in STAGE_BANNED:
            bad.append(f"{where} (stages never import Ray or Serve)")
        elif (mod == "mlsignals.commands" or mod.startswith("mlsignals.commands.")) and not (
            rel == CLI or rel.startswith("mlsignals/commands/")
        ):
            bad.append(f"{where} (only {CLI} imports the CLI's commands)")
        else:
            continue
        seen.add(line)
    return bad


def _layer_files() -> list[Path]:
    return sorted(p for name in LAYERS for p in (ROOT / name).rglob("*.py"))


def test_every_layer_is_checked() -> None:
    files = _layer_files()
    for name in LAYERS:
        assert any(p.relative_to(ROOT).parts[0] == name for p in files), f"no module found under {name}/"


@pytest.mark.parametrize("path", _layer_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_point_down(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        ("features/x.py", "from mlsignals.settings import Settings\n", "mlsignals is above features"),
        ("model/x.py", "def f():\n    from signals.ood import check_row\n", "signals is above model"),
        ("signals/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import serve_app.app\n",
         "serve_app is above signals"),
        ("model/x.py", "from ray import serve\n", "never import Ray"),
        ("signals/x.py", "import ray\n", "never import Ray"),
        ("mlsignals/x.py", "from mlsignals.commands.common import fail\n", "only mlsignals/cli.py"),
        ("mlsignals/x.py", "from mlsignals import commands\n", "only mlsignals/cli.py"),
        ("mlsignals/backtest/x.py", "from ..commands import common\n", "only mlsignals/cli.py"),
        ("common/x.py", "from features import candles\n", "features is above common"),
    ],
)
def test_the_rule_catches_an_upward_import(tmp_path: Path, rel: str, source: str, expected: str) -> None:
    f = tmp_path / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(source)
    found = violations(f, tmp_path)
    assert len(found) == 1 and expected in found[0], found


def test_allowed_imports_pass(tmp_path: Path) -> None:
    cases = {
        "signals/x.py": "from model.contract import ModelOutput\nfrom common.errors import MLSignalsError\n",
        "mlsignals/cli.py": "from mlsignals.commands import data\n",
        "mlsignals/commands/x.py": "from mlsignals.commands.common import fail\n",
        "serve_app/x.py": "from ray import serve\nfrom mlsignals import factories\n",
    }
    for rel, src in cases.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(src)
        assert violations(f, tmp_path) == [], rel
