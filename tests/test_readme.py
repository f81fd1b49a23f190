"""The README's two commands are the ones CI and sample users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Try it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_two_commands_and_ci_runs_the_test_one() -> None:
    install_and_run, install_and_test = readme_commands()
    assert "sninspect report sample_checkpoints/" in install_and_run
    assert "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    # CI runs the same install and the same test runner (with quieter flags).
    install = install_and_test.split("&&")[0].replace("pip install", "python3 -m pip install -q").strip()
    assert install in ci
    assert "python3 -m pytest" in ci


def test_the_sample_named_in_the_readme_exists() -> None:
    install_and_run = readme_commands()[0]
    sample = install_and_run.split("sninspect report ", 1)[1].split()[0]
    assert (ROOT / sample).is_file()
