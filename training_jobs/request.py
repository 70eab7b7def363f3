"""One train request, spelled once: the typed request and the command-line flags it travels as.

``fieldloop train`` (click), ``python -m training_jobs.train`` (argparse, what torchrun
starts on every rank) and the training DAG (which hands each model's flags to
``fieldloop train``) all read and write a :class:`TrainRequest` through the one table
:data:`OPTIONS`, so a flag is named, typed and documented in one place and
``TrainRequest.from_argv(r.to_argv()) == r`` for every valid request.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from fieldloop.classes import valid_tenant
from fieldloop.datasets import TASK_LAYOUTS
from training_jobs.errors import RequestError


@dataclass(frozen=True)
class TrainRequest:
    """What to train: one model of one task, from which tables, for how long.

    Attributes:
        task: the model task (one of :data:`fieldloop.datasets.TASK_LAYOUTS`).
        tenant: train ``fieldloop.<task>.<tenant>``; None: the base model ``fieldloop.<task>``.
        tables: gold tables as ``NAME`` or ``NAME@VERSION``; empty: every training dataset of
            the task the model may use, at its latest version.
        epochs: epochs for the teacher and then the student; None: the config's.
        seed: random seed; None: the config's.
        register: register the student as the candidate (False: a trial run, logged only).
        from_champion: start the teacher from the champion's weights when there is one.
        hard_cases: a fine-tune from the champion also learns from the hard cases its fleets
            sent (the hard-case gold tables the rule lets this model read) and is judged on
            those of held-out devices.
        reset_holdout: freeze a new holdout (later metrics then do not compare with earlier ones).
    """

    task: str
    tenant: str | None = None
    tables: tuple[str, ...] = ()
    epochs: int | None = None
    seed: int | None = None
    register: bool = True
    from_champion: bool = True
    hard_cases: bool = True
    reset_holdout: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))  # a list from a caller stays comparable
        for option in OPTIONS:
            option.check(getattr(self, option.field))

    def to_argv(self) -> list[str]:
        """The flags that give this request back through :meth:`from_argv` (defaults left out)."""
        return [arg for option in OPTIONS for arg in option.encode(getattr(self, option.field))]

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> TrainRequest:
        """The request these flags spell (argparse exits with status 2 on flags it does not take)."""
        return cls.from_options(vars(parser().parse_args(list(argv))))

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> TrainRequest:
        """The request from parsed options keyed by each option's ``dest`` (argparse's or click's)."""
        return cls(**{option.field: option.decode(values[option.dest]) for option in OPTIONS})


Kind = Literal["value", "repeated", "off-switch", "on-switch"]


@dataclass(frozen=True)
class Option:
    """One flag of a train request.

    ``kind``: ``value`` takes one value; ``repeated`` one value per use, gathered in a tuple;
    ``off-switch`` turns a field that defaults to True off (``--no-register``);
    ``on-switch`` turns a field that defaults to False on (``--reset-holdout``).
    """

    flag: str
    field: str
    kind: Kind
    help: str
    type: Callable[[str], Any] = str
    metavar: str | None = None
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    valid: Callable[[Any], bool] | None = None
    expected: str = ""

    @property
    def dest(self) -> str:
        """The parsed option's name: the field's, or a switch's own (``no_register`` holds "off")."""
        return self.field if self.kind in ("value", "repeated") else self.flag.removeprefix("--").replace("-", "_")

    def encode(self, value: Any) -> list[str]:
        # FLAG=VALUE, not FLAG VALUE: a value that starts with '-' is not taken for a flag.
        if self.kind == "repeated":
            return [f"{self.flag}={item}" for item in value]
        if self.kind == "off-switch":
            return [] if value else [self.flag]
        if self.kind == "on-switch":
            return [self.flag] if value else []
        return [] if value is None else [f"{self.flag}={value}"]

    def decode(self, value: Any) -> Any:
        if self.kind == "repeated":
            return tuple(value or ())
        if self.kind == "off-switch":
            return not value
        if self.kind == "on-switch":
            return bool(value)
        return value

    def check(self, value: Any) -> None:
        """Raises :class:`RequestError` for a value no run could take (an unknown task is the
        job's :class:`~training_jobs.errors.UnknownTaskError`; the parsers offer the choices)."""
        if value is None or self.kind != "value":
            return
        if self.minimum is not None and (not isinstance(value, int) or value < self.minimum):
            raise RequestError(self.flag, value, f"must be an integer of at least {self.minimum}")
        if self.valid is not None and not self.valid(value):
            raise RequestError(self.flag, value, self.expected)

    def argparse_type(self, text: str) -> Any:
        value = self.type(text)
        try:
            if self.choices is not None and value not in self.choices:
                raise RequestError(self.flag, value, f"not one of {', '.join(self.choices)}")
            self.check(value)
        except RequestError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value


OPTIONS: tuple[Option, ...] = (
    Option("--task", "task", "value", "Model task to train.", required=True, choices=tuple(sorted(TASK_LAYOUTS))),
    Option(
        "--tenant",
        "tenant",
        "value",
        "Train the tenant's model fieldloop.<task>.<tenant> (its own data plus public); default: the base model.",
        metavar="ID",
        valid=valid_tenant,
        expected="not a tenant id (lowercase letters, digits, '-')",
    ),
    Option(
        "--table",
        "tables",
        "repeated",
        "Gold table to train on, optionally pinned (repeatable); default: every gold table of the task the "
        "model may use, at its latest version.",
        metavar="NAME[@VERSION]",
    ),
    Option("--epochs", "epochs", "value", "Epochs for teacher and student (FIELDLOOP_TRAIN_EPOCHS).", int, minimum=1),
    Option("--seed", "seed", "value", "Random seed (FIELDLOOP_TRAIN_SEED).", int, minimum=0),
    Option("--no-register", "register", "off-switch", "Train and log the run, but register no model version."),
    Option("--from-scratch", "from_champion", "off-switch", "Ignore the champion's weights."),
    Option("--no-hard-cases", "hard_cases", "off-switch", "Learn from the gold training tables only."),
    Option(
        "--reset-holdout",
        "reset_holdout",
        "on-switch",
        "Freeze a new holdout (later metrics are then not comparable with earlier ones).",
    ),
)
assert [o.field for o in OPTIONS] == [f.name for f in fields(TrainRequest)], "one option per request field"


def parser(prog: str = "python -m training_jobs.train", description: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of a train request (callers may add flags of their own)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    for o in OPTIONS:
        if o.kind == "value":
            p.add_argument(
                o.flag, dest=o.dest, type=o.argparse_type, required=o.required, metavar=o.metavar, help=o.help
            )
        elif o.kind == "repeated":
            p.add_argument(o.flag, dest=o.dest, action="append", default=[], metavar=o.metavar, help=o.help)
        else:
            p.add_argument(o.flag, dest=o.dest, action="store_true", help=o.help)
    return p


def click_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command with the request's options; it gets them as keyword arguments by ``dest``."""
    import click

    for o in reversed(OPTIONS):  # click lists options in the order their decorators apply, innermost first
        if o.kind == "value":
            if o.choices is not None:
                kind: Any = click.Choice(o.choices)
            elif o.minimum is not None:
                kind = click.IntRange(min=o.minimum)
            else:
                kind = o.type
            command = click.option(
                o.flag, o.dest, type=kind, required=o.required, default=None, metavar=o.metavar, help=o.help
            )(command)
        elif o.kind == "repeated":
            command = click.option(o.flag, o.dest, multiple=True, metavar=o.metavar, help=o.help)(command)
        else:
            command = click.option(o.flag, o.dest, is_flag=True, help=o.help)(command)
    return command
