"""One train request, spelled once: its flags round-trip through every way a run is started."""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
from typing import Any

import pytest
from click.testing import CliRunner

from training_jobs.errors import DistributedRunError, RequestError
from training_jobs.request import OPTIONS, TrainRequest

# Per field: the value a request has when the field is left unset, and one when it is set.
UNSET_AND_SET: dict[str, tuple[Any, Any]] = {
    "task": ("vehicle-longitudinal", "plant-anomaly"),
    "tenant": (None, "acme-steel"),
    "tables": ((), ("plant_anomaly_acme_steel@3", "vehicle_longitudinal_public")),
    "epochs": (None, 1),
    "seed": (None, 0),  # 0 is a seed, not "no seed"
    "register": (True, False),
    "from_champion": (True, False),
    "hard_cases": (True, False),
    "reset_holdout": (False, True),
}


def every_request() -> list[TrainRequest]:
    choices = [
        dict(zip(UNSET_AND_SET, picks, strict=True)) for picks in itertools.product(*[(0, 1)] * len(UNSET_AND_SET))
    ]
    return [TrainRequest(**{f: UNSET_AND_SET[f][pick] for f, pick in c.items()}) for c in choices]


def test_every_field_has_one_flag() -> None:
    assert [o.field for o in OPTIONS] == list(UNSET_AND_SET)
    assert len({o.flag for o in OPTIONS}) == len(OPTIONS)


def test_every_request_round_trips_through_its_argv_and_a_shell() -> None:
    requests = every_request()
    assert len(set(requests)) == 2 ** len(UNSET_AND_SET)
    for request in requests:
        argv = request.to_argv()
        assert TrainRequest.from_argv(argv) == request, argv
        assert TrainRequest.from_argv(shlex.split(shlex.join(argv))) == request  # as the DAG hands it on


def test_defaults_are_left_out_and_a_value_that_looks_like_a_flag_stays_a_value() -> None:
    assert TrainRequest("plant-anomaly").to_argv() == ["--task=plant-anomaly"]
    odd = TrainRequest("plant-anomaly", tables=("-x",))
    assert TrainRequest.from_argv(odd.to_argv()) == odd
    assert TrainRequest("plant-anomaly", tables=["a", "b"]).tables == ("a", "b")  # a list is kept as a tuple


@pytest.mark.parametrize(
    ("fields", "option"),
    [({"tenant": "ACME Steel"}, "--tenant"), ({"epochs": 0}, "--epochs"), ({"seed": -1}, "--seed")],
)
def test_a_request_no_run_could_take_is_refused_by_name(fields: dict, option: str) -> None:
    with pytest.raises(RequestError, match=option) as refused:
        TrainRequest("plant-anomaly", **fields)
    assert refused.value.option == option


@pytest.mark.parametrize("argv", [["--task=nope"], ["--task=plant-anomaly", "--epochs=0"], []])
def test_argparse_refuses_what_the_request_refuses(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        TrainRequest.from_argv(argv)
    assert exited.value.code == 2


def test_the_cli_and_its_torchrun_children_see_the_same_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """`fieldloop train` parses to the request, and with --nproc hands torchrun exactly its argv."""
    from fieldloop.cli import main
    from training_jobs import train as job

    request = every_request()[-1]
    seen: list[TrainRequest] = []
    monkeypatch.setattr(job, "train", lambda cfg, r, echo=None: seen.append(r))
    result = CliRunner().invoke(main, ["train", *request.to_argv(), "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [request] and json.loads(result.output) == {}

    commands: list[list[str]] = []

    def torchrun(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        commands.append(command)
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(subprocess, "run", torchrun)
    result = CliRunner().invoke(main, ["train", *request.to_argv(), "--nproc", "2"])
    assert result.exit_code == 1 and "torchrun with 2 processes failed (exit 3)" in result.output
    child = commands[0][commands[0].index("training_jobs.train") + 1 :]
    assert child[-1].startswith("--result-file=")
    assert TrainRequest.from_argv(child[:-1]) == request


def test_distributed_failure_carries_its_numbers() -> None:
    error = DistributedRunError(2, 3)
    assert (error.nproc, error.exit_code) == (2, 3)
