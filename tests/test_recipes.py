"""The shipped recipes: found by name (and by their old checkout paths), all parse into a TrainConfig, and every one
is declared as package data, so an installed wheel carries it; each parses into its task's config (`task:`)."""

import fnmatch
import tomllib
from pathlib import Path

import pytest

from malsori.errors import ConfigError
from malsori.recipes import RECIPES, known_recipes, resolve_recipe
from malsori.tasks import load_train_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_recipe_resolves_by_name_and_parses():
    names = known_recipes()
    assert {"conformer_ctc_demo", "conformer_ctc_5m", "streaming/conformer_ctc", "streaming/mocha_las", "lm/gpt_char_tiny"} <= set(names)
    for name in names:
        path = resolve_recipe(name)
        assert path == RECIPES / f"{name}.yaml" == resolve_recipe(f"recipes/{name}.yaml")  # the old checkout path too
        load_train_config(path, [])


def test_a_path_wins_and_an_unknown_name_lists_the_known_ones(tmp_path):
    mine = tmp_path / "conformer_ctc_demo.yaml"
    mine.write_text("max_steps: 3\n")
    assert resolve_recipe(str(mine)) == mine
    with pytest.raises(ConfigError, match="no_such: no such recipe.*conformer_ctc_demo"):
        resolve_recipe("no_such")


def _declared(path: str, pattern: str) -> bool:
    """setuptools' package-data glob: `*` stays within one folder level."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatch(a, b) for a, b in zip(parts, pats))


def test_every_recipe_file_is_package_data():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["malsori.recipes"]
    files = [p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob("*.yaml")]
    assert "streaming/conformer_ctc.yaml" in files and not _declared("streaming/conformer_ctc.yaml", "*.yaml")
    assert all(any(_declared(f, pattern) for pattern in declared) for f in files), (files, declared)
