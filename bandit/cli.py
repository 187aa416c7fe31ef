"""The ``cmab`` command line: one Typer app, one function per command.

Commands import what they run inside their bodies, so ``cmab --help`` stays fast and the
package layering holds (simulators build on bandit, never the reverse at import time).
A bad argument gets one line on stderr and exit code 2, never a traceback: ``main`` runs the app
outside Typer's standalone mode and reports usage errors and BanditErrors itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bandit.errors import BanditError, InvalidInputError

app = typer.Typer(
    name="cmab",
    add_completion=False,
    pretty_exceptions_enable=False,
)

USAGE_ERROR = 2


class EnvName(StrEnum):
    email = "email"
    linear = "linear"


@app.callback()
def _cmab() -> None:
    """Contextual multi-armed bandit engine."""
    # A callback makes Typer keep command names (`cmab simulate`) even while there is one command.


@app.command()
def simulate(
    env: Annotated[EnvName, typer.Option(help="Environment to simulate.")] = EnvName.email,
    policies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated policies among lin_ucb, lin_ts, beta_ts, epsilon_greedy, "
            "hybrid_lin_ucb.",
            show_default="all",
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Simulated subscribers (decisions).")] = 20_000,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Decisions per batch; policies learn between batches.")
    ] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the environment, contexts and clicks.")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the report.")] = Path("reports/simulate"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    drift: Annotated[
        bool, typer.Option(help="Preferences drift linearly over the whole run.")
    ] = False,
) -> None:
    """Compare policies on a simulated environment against uniform random and the oracle."""
    from rich.console import Console
    from rich.table import Table

    from simulators.environments import make_environment
    from simulators.report import SUMMARY_HEADER, format_row, write_report
    from simulators.simulate import POLICY_NAMES, make_policies
    from simulators.simulate import simulate as run_simulation

    names = POLICY_NAMES if policies is None else [
        name.strip() for name in policies.split(",") if name.strip()
    ]
    if not names:
        raise InvalidInputError("--policies: expected at least one policy name")
    environment = make_environment(env.value, seed=seed, drift_steps=steps if drift else None)
    contenders = make_policies(names, environment, seed=seed)
    try:
        # Before the simulation, so an unwritable --out costs nothing.
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(f"--out: cannot create directory {out}: {error.strerror}") from None
    result = run_simulation(
        environment,
        contenders,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    report = write_report(result, out)

    table = Table(title=f"{env.value}: {steps} steps, batch size {batch_size}, seed {seed}")
    for i, column in enumerate(SUMMARY_HEADER):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in result.summary():
        table.add_row(*format_row(row))
    console = Console()
    console.print(table)
    console.print(f"report: {report}", soft_wrap=True, markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cmab`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    try:
        # Outside standalone mode usage errors reach us instead of being drawn as a Rich panel.
        code = app(args=args, prog_name="cmab", standalone_mode=False)
    except typer.TyperException as error:  # Typer's usage errors (bad option, value, command)
        return _fail(error.format_message(), error.exit_code)
    except BanditError as error:
        return _fail(str(error), USAGE_ERROR)
    except typer.Abort:
        return _fail("aborted", 1)
    # Typer returns the command's value (None on success) or the code of an explicit exit.
    return code if isinstance(code, int) else 0


def _fail(message: str, code: int) -> int:
    # One line, whatever the message: scripts and log scrapers read the last line of stderr.
    print(f"cmab: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
