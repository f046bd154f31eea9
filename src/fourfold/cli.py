"""The ``fourfold`` command line: ``fourfold <system> <verb>`` and ``fourfold demo``.

Each system registers itself by providing ``fourfold/<system>/cli.py`` with a typer ``app`` and a
``run_demo(out_dir, quick) -> DemoResult``. Those modules import heavy libraries inside their commands,
so ``fourfold --help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from fourfold import __version__

# system name -> module providing `app` and `run_demo`; the order is the report's order
SYSTEM_MODULES: dict[str, str] = {
    "trainer": "fourfold.train.cli",
    "sara": "fourfold.sara.cli",
    "intra": "fourfold.intra.cli",
    "drawaudio": "fourfold.drawaudio.cli",
    "songcreator": "fourfold.songcreator.cli",
}

# tools that add a command group but have no demo
TOOL_MODULES: dict[str, str] = {
    "studio": "fourfold.studio.cli",
    "data": "fourfold.data.cli",
}

app = typer.Typer(
    name="fourfold",
    help="fourfold: INTRA, Draw an Audio, SongCreator and SaRA in one PyTorch toolkit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _load_system(module_name: str) -> ModuleType | None:
    """Import a system's CLI module; ``None`` only when that module does not exist (system not installed)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            return None
        raise


def available_systems() -> dict[str, ModuleType]:
    found = {}
    for name, module_name in SYSTEM_MODULES.items():
        module = _load_system(module_name)
        if module is not None:
            found[name] = module
    return found


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fourfold {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """fourfold: INTRA, Draw an Audio, SongCreator and SaRA in one PyTorch toolkit."""


@app.command("demo")
def demo(
    out: Annotated[
        Path, typer.Option(help="Directory for report.html, metrics.json and each system's media.")
    ] = Path("demo-out"),
    systems: Annotated[
        str | None, typer.Option(help="Comma-separated systems to run (default: all installed).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Run the fuller (slower) form of each demo.")] = False,
) -> None:
    """Run each system's demo on procedural data and write OUT/report.html and OUT/metrics.json."""
    from fourfold.report import DemoResult, write_report

    registry = available_systems()
    chosen = list(registry) if systems is None else [s.strip() for s in systems.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in registry]
    if unknown:
        typer.echo(f"error: unknown system(s) {unknown}; available: {sorted(registry)}", err=True)
        raise typer.Exit(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    results: list[DemoResult] = []
    failed: list[str] = []
    for name in chosen:
        typer.echo(f"== {name}: running its {'full' if full else 'quick'} demo")
        started = time.perf_counter()
        try:
            result = registry[name].run_demo(out / name, quick=not full)
        except Exception as err:  # one system's failure must not hide the others' results
            traceback.print_exc()
            failed.append(name)
            result = DemoResult(
                system=name,
                title=f"{name} (failed)",
                summary=f"The demo raised {type(err).__name__}: {err}",
                checks={"demo ran": False},
            )
        result.seconds = result.seconds or time.perf_counter() - started
        results.append(result)
        typer.echo(f"   {name}: {result.seconds:.1f} s; checks: {json.dumps(result.checks)}")
        write_report(results, out)  # after each system, so a long run shows progress in the report
    report, metrics = write_report(results, out)
    typer.echo(f"report: {report}\nmetrics: {metrics}")
    if failed:
        typer.echo(f"error: demo failed for {failed}", err=True)
        raise typer.Exit(1)


def _register_systems() -> None:
    for name, module in available_systems().items():
        sub = getattr(module, "app", None)
        if sub is not None:
            app.add_typer(sub, name=name)
    for name, module_name in TOOL_MODULES.items():
        module = _load_system(module_name)
        if module is not None and getattr(module, "app", None) is not None:
            app.add_typer(module.app, name=name)


_register_systems()


def main() -> None:
    """Console entry point: errors from bad input print one line naming the problem (exit 1).

    ``FOURFOLD_DEBUG=1`` re-raises them with the full traceback.
    """
    try:
        app(prog_name="fourfold")
    except Exception as err:
        if os.environ.get("FOURFOLD_DEBUG"):
            raise
        typer.echo(f"error: {type(err).__name__}: {err}", err=True)
        typer.echo("(set FOURFOLD_DEBUG=1 to see the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
