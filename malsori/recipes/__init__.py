"""The training recipes shipped with malsori (YAML package data, so an installed wheel has them too) and the one
resolver from a recipe name or path to its file."""

from __future__ import annotations

from pathlib import Path

from malsori.errors import ConfigError

RECIPES = Path(__file__).resolve().parent


def known_recipes(folder: Path = RECIPES) -> list[str]:
    """Names of the recipes in `folder`, e.g. `conformer_ctc_demo`, `streaming/conformer_ctc`."""
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in Path(folder).rglob("*.yaml"))


def resolve_recipe(name: str | Path, folder: Path = RECIPES) -> Path:
    """A YAML file that exists, else the recipe of that name in `folder` (the shipped ones by default:
    `conformer_ctc_demo`, `streaming/mocha_las`; a `.yaml` suffix and a leading `recipes/`, as in checkout paths,
    are accepted)."""
    p = Path(name)
    if p.is_file():
        return p
    cand = Path(folder) / f"{p.as_posix().removesuffix('.yaml').removeprefix('recipes/')}.yaml"
    if cand.is_file():
        return cand
    raise ConfigError(f"{name}: no such recipe file, nor a recipe in {folder} (one of: {', '.join(known_recipes(folder))})")
