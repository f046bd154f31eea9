"""The `fourfold` command line: help, version, errors, and the demo report."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from fourfold import __version__
from fourfold.cli import app

runner = CliRunner()


def test_help_lists_demo_and_systems():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output and "trainer" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_unknown_command_and_option_fail_clearly():
    bad_command = subprocess.run(
        [sys.executable, "-m", "fourfold.cli", "frobnicate"], capture_output=True, text=True
    )
    assert bad_command.returncode != 0 and "No such command 'frobnicate'" in bad_command.stderr
    bad_option = subprocess.run(
        [sys.executable, "-m", "fourfold.cli", "demo", "--bogus"], capture_output=True, text=True
    )
    assert bad_option.returncode != 0 and "No such option: --bogus" in bad_option.stderr


def test_unknown_demo_system_is_named(tmp_path):
    result = runner.invoke(app, ["demo", "--systems", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown system(s) ['nope']" in result.output


def test_demo_writes_report_and_metrics(tmp_path):
    result = runner.invoke(app, ["demo", "--systems", "trainer", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    trainer = metrics["trainer"]
    assert trainer["checks"]["loss falls below chance level"]
    assert trainer["metrics"]["final_loss"] < trainer["metrics"]["first_loss"]
    page = (tmp_path / "report.html").read_text()
    assert "Shared Trainer" in page and "data:image/png;base64," in page and "<table>" in page


def test_bad_input_prints_one_line_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = subprocess.run(
        [sys.executable, "-m", "fourfold.cli", "intra", "infer", "--image", str(bad), "--text", "hold",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: ImageLoadError: cannot read image" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
