"""Run options: one dataclass per kind of run, the one place their defaults, help and checks live.

Each field is declared with ``setting(...)``: its default, its help text, the
kind of value it takes (how text becomes one, what makes one bad) and, where
it differs from the field's name, its command-line flag.  From that one
declaration:

* ``cancerseg predict`` / ``cancerseg train`` generate their options
  (``cli.add_options``), with the help and the default shown in ``--help``;
* ``validate()`` names every bad setting in one ``CancersegError``;
* ``to_json`` / ``from_json`` carry the options to the model process as one
  argument, and ``to_argv`` turns them back into the CLI's own flags for a
  dock that starts a ``cancerseg`` child (``cli_command``).

``PredictOptions`` lives here; ``TrainOptions`` in ``training/options.py``.
Standard library only: the napari process imports this module (no
TensorFlow, Keras or napari).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import CancersegError

# ---- kinds of value ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What values a setting takes: how the CLI's text becomes one, and what makes one bad."""

    what: str  # "a whole number": for "not a whole number: 'x'"
    parse: Callable[[str], Any]
    problem: Callable[[Any], str | None]  # why a value is bad ("must be 1 or more, not 0"), None if it is fine
    show: Callable[[Any], str] = str  # the value as the CLI spells it (the inverse of parse)
    sequence: bool = False  # a tuple of values: JSON gives it back as a list


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


INT = Kind("a whole number", int, lambda v: None if _is_int(v) else f"must be a whole number, not {v!r}")
NON_NEGATIVE_INT = Kind("a whole number", int, lambda v: None if _is_int(v) and v >= 0 else
                        f"must be 0 or more, not {v!r}")
POSITIVE_INT = Kind("a whole number", int, lambda v: None if _is_int(v) and v >= 1 else
                    f"must be 1 or more, not {v!r}")
POSITIVE_FLOAT = Kind("a number", float, lambda v: (
    f"must be positive, not {v!r}" if not (_is_number(v) and v > 0) else
    f"must be finite, not {v!r}" if not math.isfinite(v) else None))
FRACTION = Kind("a number", float, lambda v: None if _is_number(v) and 0 <= v <= 1 else
                f"must be a fraction from 0 to 1, not {v!r}")
TEXT = Kind("text", str, lambda v: None if isinstance(v, str) else f"must be text, not {v!r}")
FLAG = Kind("true or false", lambda t: t.lower() in ("1", "true", "yes"),
            lambda v: None if isinstance(v, bool) else f"must be true or false, not {v!r}")
POSITIVE_INTS = Kind(
    "comma-separated whole numbers", lambda t: tuple(int(p) for p in _csv(t)),
    lambda v: None if isinstance(v, tuple) and v and all(_is_int(p) and p >= 1 for p in v) else
    f"must be one or more whole numbers of 1 or more, not {v!r}",
    lambda v: ",".join(map(str, v)), sequence=True)
NAMES = Kind("comma-separated names", lambda t: tuple(_csv(t)),
             lambda v: None if isinstance(v, tuple) and v and all(isinstance(p, str) and p for p in v) else
             f"must be names, not {v!r}", lambda v: ",".join(v), sequence=True)
NUMBERS = Kind("comma-separated numbers", lambda t: tuple(float(p) for p in _csv(t)),
               lambda v: None if isinstance(v, tuple) and all(_is_number(p) for p in v) else
               f"must be numbers, not {v!r}", lambda v: ",".join(map(str, v)), sequence=True)
MAPPING = Kind("a JSON object", json.loads, lambda v: None if isinstance(v, dict) else f"must be a mapping, not {v!r}",
               json.dumps)


# ---- settings: a field's metadata ----------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    help: str
    kind: Kind
    flag: str | None = None  # the CLI flag; default "--" + the field's name with dashes
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    none: str | None = None  # what None means ("the model's"); None is allowed only when this says what it means
    group: str | None = None  # settings of one group are mutually exclusive on the command line
    cli: bool = True  # False: set by the command itself (e.g. what reproduces the run), not a flag


def setting(default: Any = dataclasses.MISSING, *, help: str, kind: Kind, factory: Any = dataclasses.MISSING,
            **more: Any) -> Any:
    """A dataclass field carrying its ``Setting`` (help, kind of value, flag, choices, what None means)."""
    metadata = {"setting": Setting(help=help, kind=kind, **more)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def setting_of(field: dataclasses.Field) -> Setting:
    return field.metadata["setting"]


def flag_of(field: dataclasses.Field) -> str:
    """The field's CLI flag; a flag on by default is turned off with ``--no-NAME``."""
    option = setting_of(field)
    if option.flag:
        return option.flag
    name = field.name.replace("_", "-")
    return f"--no-{name}" if option.kind is FLAG and field.default is True else f"--{name}"


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def shown_default(field: dataclasses.Field) -> str | None:
    """The default as ``--help`` shows it (None: no default to show, e.g. a flag or a required setting)."""
    option, default = setting_of(field), default_of(field)
    if default is dataclasses.MISSING or option.kind is FLAG or default == "":
        return None
    if default is None:
        return option.none
    return option.kind.show(default)


OptionsT = TypeVar("OptionsT", bound="Options")


class Options:
    """What ``PredictOptions`` and ``TrainOptions`` share: checks, JSON and CLI arguments from the fields."""

    @classmethod
    def settings(cls) -> Iterator[dataclasses.Field]:
        """The fields that are settings (every field of an options dataclass is)."""
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "setting" in field.metadata:
                yield field

    def problems(self) -> list[str]:
        """Each bad setting, named: 'batch must be 1 or more, not 0'."""
        found = []
        for field in self.settings():
            option, value = setting_of(field), getattr(self, field.name)
            if value is None and option.none is not None:
                continue
            problem = option.kind.problem(value)
            if problem is None and option.choices is not None and value not in option.choices:
                problem = f"must be one of {', '.join(map(str, option.choices))}, not {value!r}"
            if problem:
                found.append(f"{field.name} {problem}")
        return found

    def validate(self: OptionsT) -> OptionsT:  # noqa: PYI019 - typing.Self is Python 3.11+, we support 3.10
        """These options, if every setting is good; else a CancersegError naming every bad one."""
        problems = self.problems()
        if problems:
            raise CancersegError("; ".join(problems))
        return self

    def replace(self: OptionsT, **changes: Any) -> OptionsT:  # noqa: PYI019 - as validate
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls: type[OptionsT], text: str) -> OptionsT:  # noqa: PYI019 - as validate
        """Options from ``to_json``'s text, checked: unknown names and bad values are errors that name them."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CancersegError(f"{cls.__name__}: not JSON ({err}): {text[:200]!r}") from None
        if not isinstance(data, dict):
            raise CancersegError(f"{cls.__name__}: expected a JSON object, not {text[:200]!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise CancersegError(f"{cls.__name__}: unknown settings {', '.join(unknown)}")
        missing = sorted(name for name, f in fields.items()
                         if default_of(f) is dataclasses.MISSING and name not in data)
        if missing:
            raise CancersegError(f"{cls.__name__}: missing settings {', '.join(missing)}")
        # JSON has lists where the fields hold tuples (filters, class names)
        data = {k: tuple(v) if isinstance(v, list) and "setting" in fields[k].metadata
                and setting_of(fields[k]).kind.sequence else v for k, v in data.items()}
        return cls(**data).validate()

    def to_argv(self, skip_defaults: bool = True) -> list[str]:
        """The CLI flags that give these options (by default only those that differ from the defaults).

        The inverse of the parser that ``cli.add_options`` builds: parsed back, the
        flags give equal options.  A setting that is no flag (``cli=False``) cannot
        be passed this way, so a non-default one is an error rather than lost.
        """
        argv: list[str] = []
        for field in self.settings():
            option, value, default = setting_of(field), getattr(self, field.name), default_of(field)
            if value == default and (skip_defaults or not option.cli):
                continue
            if not option.cli:
                raise CancersegError(f"{field.name} is not a command-line setting: it cannot be passed as "
                                     f"{value!r}")
            if option.kind is FLAG:
                if value != (default is True):  # the flag says "not the default"
                    argv.append(flag_of(field))
            elif value is not None:
                argv += [flag_of(field), option.kind.show(value)]
        return argv


def cli_command(command: str, *arguments: str, options: Options | None = None,
                **flags: str | Sequence[str] | bool | None) -> list[str]:
    """The argv of a ``cancerseg COMMAND`` child process, as a dock starts it.

    ``flags``: ``model="m.keras"`` -> ``--model m.keras``; True -> ``--json``;
    a list -> ``--route a b``; None or False -> left out.  ``options``: their
    flags (``Options.to_argv``).
    """
    argv = [sys.executable, "-m", "napari_cancerseg.cli", command, *arguments]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, str):
            argv += [flag, value]
        elif value:
            argv += [flag, *value]
    return argv + (options.to_argv() if options is not None else [])


# ---- prediction --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictOptions(Options):
    """How one slide is predicted (``predict_slide``, ``cancerseg predict``, the Predict slide dock).

    None for level, mpp, tile and overlap means "the model's": ``resolved(recipe)``
    fills them from the bundle's Recipe.
    """

    level: int | None = setting(None, kind=NON_NEGATIVE_INT, group="where", none="the level nearest --mpp",
                                help="predict this OpenSlide level")
    mpp: float | None = setting(None, kind=POSITIVE_FLOAT, group="where", none="the model's",
                                help="predict the level closest to this many µm/px")
    tile: int | None = setting(None, kind=POSITIVE_INT, none="the model's", help="tile size in pixels")
    overlap: int | None = setting(None, kind=NON_NEGATIVE_INT, none="the model's",
                                  help="overlap between tiles in pixels, even, at most half the tile")
    batch: int = setting(16, kind=POSITIVE_INT, help="tiles per forward pass of the model")
    tissue: float = setting(0.1, kind=FRACTION, help="minimum tissue fraction of a chunk to predict it")
    readers: int = setting(4, kind=POSITIVE_INT, help="tile decoders (threads, or processes with --reader-processes)")
    reader_processes: bool = setting(False, kind=FLAG, help="decode tiles in spawned processes, through shared "
                                     "memory (threads were faster on 16 cores)")
    scheduler: str | None = setting(None, kind=TEXT, metavar="ADDRESS", none="local threads",
                                    help="run on this dask.distributed scheduler (e.g. tcp://host:8786); its "
                                         "workers must see the slide, the model and --out at the same paths")
    overwrite: bool = setting(False, kind=FLAG, help="replace an existing store that holds another prediction "
                              "instead of refusing it")

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.level is not None and self.mpp is not None:
            problems.append(f"give level or mpp, not both (level {self.level}, mpp {self.mpp})")
        return problems

    def resolved(self, recipe: Any) -> PredictOptions:
        """These options with the model's values (``recipe``: the bundle's ``Recipe``) where they say None.

        ``mpp`` becomes the model's µm/px unless a level was chosen (the level is then what is read).
        """
        return self.replace(tile=recipe.tile_size if self.tile is None else self.tile,
                            overlap=recipe.overlap if self.overlap is None else self.overlap,
                            mpp=recipe.mpp if self.mpp is None and self.level is None else self.mpp)

    @classmethod
    def from_form(cls, **values: Any) -> PredictOptions:
        """Options from a dock's spin boxes, where 0 (the box's minimum) says "the model's".

        A spin box has no empty value; 0 stands for None wherever 0 is no valid
        value and None means something (µm/px, tile): the options never carry 0 there.
        """
        fields = {f.name: f for f in cls.settings()}
        for name, value in values.items():
            option = setting_of(fields[name]) if name in fields else None
            if option is not None and option.none is not None and value == 0 and option.kind.problem(0):
                values[name] = None
        return cls(**values).validate()
