"""Click option types that refuse a bad value while parsing, before any work: a config field's declared range (read
from the field, so the range is written once, in malsori.config's `bounded`) and a torch device name."""

from __future__ import annotations

import dataclasses
import typing

import click

from malsori.config import RANGE, Range
from malsori.device import device_problem


class Bounded(click.ParamType):
    """An int or float option inside `rng` (floats also finite: click's FloatRange lets NaN through)."""

    def __init__(self, rng: Range, base: type) -> None:
        self.rng, self.base = rng, click.INT if base is int else click.FLOAT
        self.name = self.base.name

    def convert(self, value, param, ctx):
        value = self.base.convert(value, param, ctx)
        problem = self.rng.problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


def field_type(cls: type, name: str) -> Bounded:
    """The option type of config field `cls.name`: its number type and its declared range."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    hint = typing.get_type_hints(cls)[name]
    base = int if int in (typing.get_args(hint) or (hint,)) else float
    return Bounded(f.metadata[RANGE], base)


class Device(click.ParamType):
    """A torch device name that this machine has."""

    name = "device"

    def convert(self, value, param, ctx):
        problem = device_problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


DEVICE = Device()
