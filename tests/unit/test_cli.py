"""The command line refuses a rebuild it cannot name before touching any database."""

import pytest

from infrastructure.cli import parser, projections
from infrastructure.settings import Settings


@pytest.mark.parametrize("argv", [["projections", "rebuild"], ["projections", "rebuild", "tokens"]])
def test_a_rebuild_must_name_a_known_projection(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # No database is configured or reachable here: the refusal comes first.
    assert projections(parser().parse_args(argv), Settings(database_url="postgresql://nobody@127.0.0.1:1/none")) == 2
    error = capsys.readouterr().err
    assert "token_lookup" in error and "audit" in error


@pytest.mark.parametrize("attempts", ["0", "-1", "two", "1.5"])
def test_a_rebuild_refuses_an_attempt_count_below_one(attempts: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["projections", "rebuild", "audit", "--attempts", attempts])
    assert exited.value.code == 2
    assert "--attempts" in capsys.readouterr().err


def test_a_rebuild_takes_an_attempt_count() -> None:
    assert parser().parse_args(["projections", "rebuild", "audit", "--attempts", "2"]).attempts == 2
    assert parser().parse_args(["projections", "rebuild", "audit"]).attempts is None  # SWAP_ATTEMPTS


def test_an_attempt_count_is_refused_for_status(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["projections", "status", "--attempts", "2"])
    assert projections(args, Settings(database_url="postgresql://nobody@127.0.0.1:1/none")) == 2
    assert "--attempts applies to a rebuild only" in capsys.readouterr().err
