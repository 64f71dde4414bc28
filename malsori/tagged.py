"""Tagged configs: model families registered by name, each with its own settings dataclass, and configs whose tags
(`encoder: conformer`, `head: ctc`, `kind: gpt`) pick families whose settings sit in sections named after them
(`conformer: {...}`). A new family registers itself beside its code; no shared config or registry changes.

This module imports no family: the families import it (through their room's registry module).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from malsori.config import build_fields, from_dict, to_dict
from malsori.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """One registered family: its name, its settings dataclass (None: no settings), its section and its builder."""

    name: str  # the tag's value that picks it
    config_class: type | None  # dataclass of its settings, or None
    section: str  # the config section holding its settings: its name, unless families share one (translators' `rnn`)
    build: Callable[..., Any]  # builder; its arguments are the registry's (for most, the settings instance or None first)


class Registry(dict[str, Family]):
    """Families of one kind (speech encoders, heads, language models, translators) by name."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what  # what a family of this table is, for error messages ("encoder")

    def register(self, name: str, config_class: type | None = None, section: str | None = None) -> Callable[[Callable], Callable]:
        """Decorator: file the builder under `name` with its settings dataclass, read from the config section `section`
        (default: `name`); returns the builder unchanged."""

        def wrap(builder: Callable) -> Callable:
            if name in self and self[name].build is not builder:
                raise ValueError(f"{self.what} '{name}' is registered twice")
            self[name] = Family(name, config_class, section or name, builder)
            return builder

        return wrap

    def family(self, name: str, where: str) -> Family:
        """The family `name`, or a ConfigError naming the config field `where` and the known names."""
        if name not in self:
            raise ConfigError(f"{where}: unknown {self.what} '{name}' (known: {', '.join(sorted(self))})")
        return self[name]


@dataclass(init=False, eq=False)
class TaggedConfig:
    """Base of a config whose tag fields (`TAGS`: field name → Registry) name families; each chosen family's settings
    live in `sections` under its section name (the family's name unless shared) and read as attributes
    (`cfg.conformer`; its defaults when absent). A subclass is `@dataclass(init=False, eq=False)` with the tags (and
    any plain settings) as typed fields.

    Read from a mapping (`config.from_dict` calls `from_mapping`), every section present is parsed and checked;
    written (`to_mapping`, used by `config.to_dict`), only the chosen families' sections are, so a model folder holds
    what its model needs and older folders with unused sections still load. Equality is equality when written."""

    TAGS: ClassVar[dict[str, Registry]] = {}
    sections: dict[str, Any] = field(default_factory=dict, init=False)  # section name → its settings

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "sections", {})
        for f in dataclasses.fields(self):
            if f.init:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                setattr(self, f.name, values.pop(f.name, default))
        for name, value in values.items():
            if name not in self.section_classes():
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument '{name}'")
            self.sections[name] = value

    @classmethod
    def section_classes(cls) -> dict[str, type]:
        """Section name → settings dataclass, for every registered family (of any tag) that has settings."""
        out: dict[str, type] = {}
        for registry in cls.TAGS.values():
            for fam in registry.values():
                if fam.config_class is not None:
                    if out.get(fam.section, fam.config_class) is not fam.config_class:
                        raise TypeError(f"{cls.__name__}: two families use section '{fam.section}' with different settings")
                    out[fam.section] = fam.config_class
        return out

    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails: a section
        if not name.startswith("_") and name != "sections":
            classes = self.section_classes()
            if name in classes:
                return self.sections.setdefault(name, classes[name]())
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.section_classes() and name not in {f.name for f in dataclasses.fields(self)}:
            self.sections[name] = value
        else:
            object.__setattr__(self, name, value)

    def family(self, tag: str) -> Family:
        """The family chosen by tag field `tag` (ConfigError naming `model.<tag>` when it is not registered)."""
        return self.TAGS[tag].family(getattr(self, tag), f"model.{tag}")

    def section(self, tag: str) -> Any:
        """The settings of the family chosen by `tag` (None for a family without settings)."""
        fam = self.family(tag)
        return getattr(self, fam.section) if fam.config_class is not None else None

    @classmethod
    def from_mapping(cls, data: dict, where: str) -> TaggedConfig:
        """Parse `data`: the plain and tag fields as `from_dict` does, each section with its family's dataclass
        (errors name `where.section.key`); an unknown key or a tag naming no registered family is a ConfigError."""
        classes = cls.section_classes()
        plain = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = [k for k in data if k not in plain and k not in classes]
        if unknown:
            raise ConfigError(f"unknown config key '{_join(where, unknown[0])}' (known: {', '.join(sorted(plain | set(classes)))})")
        cfg = build_fields(cls, {k: v for k, v in data.items() if k in plain}, where)
        for tag, registry in cls.TAGS.items():
            registry.family(getattr(cfg, tag), _join(where, tag))
        for name, value in data.items():
            if name in classes and name not in plain:
                sub = _join(where, name)
                cfg.sections[name] = value if isinstance(value, classes[name]) else from_dict(classes[name], value, sub)
        return cfg

    def to_mapping(self) -> dict:
        """Plain data: the fields, each tag followed by its chosen family's section (when it has settings)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.init:
                out[f.name] = to_dict(getattr(self, f.name))
                if f.name in self.TAGS:
                    fam = self.family(f.name)
                    if fam.config_class is not None:
                        out[fam.section] = to_dict(getattr(self, fam.section))
        return out

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_mapping() == other.to_mapping()

    __hash__ = None  # mutable, like any dataclass config


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
