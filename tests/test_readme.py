"""The README's two commands are the ones CI and sample users run, and CI is a new machine."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
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
    # CI runs the README's install and test runner (quieter flags) inside a venv it makes itself.
    install, test = (part.strip() for part in install_and_test.split("&&"))
    assert install.replace("pip install", "pip install -q") in ci
    assert test in ci
    assert "python3 -m venv" in ci and "mktemp -d" in ci and "/bin/activate" in ci


def test_the_sample_named_in_the_readme_exists() -> None:
    install_and_run = readme_commands()[0]
    sample = install_and_run.split("sninspect report ", 1)[1].split()[0]
    assert (ROOT / sample).is_file()


# Import name -> distribution name where the two differ.
_DIST = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn"}


def _top_level_imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        names |= _top_level_imports_of(path)
    return names


def _top_level_imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    if path.is_file():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _declared(*groups: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for group in groups:
        reqs += project["optional-dependencies"][group]
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def _third_party(names: set[str]) -> set[str]:
    local = {"sninspect", "conftest", "reflayers", "snruns", "hostile", "base", "make_synthetic", "make_samples"}
    local |= {p.stem for p in (ROOT / "tests").glob("*.py")} | {p.stem for p in (ROOT / "examples").glob("*.py")}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


INTEGRATIONS = {"lightning": "lightning"}
"""``sninspect/integrations/<module>.py`` -> the optional extra that provides its framework."""


def test_every_third_party_import_is_declared() -> None:
    core = [path for path in (ROOT / "sninspect").rglob("*.py") if "integrations" not in path.parts]
    package = _third_party(set().union(*map(_top_level_imports_of, core)))
    for module, extra in INTEGRATIONS.items():
        found = _third_party(_top_level_imports_of(ROOT / "sninspect" / "integrations" / f"{module}.py"))
        assert {_DIST.get(n, n).lower() for n in found} <= _declared(extra)
    tests = _third_party(_top_level_imports(ROOT / "tests") | _top_level_imports(ROOT / "sample_checkpoints")
                         | _top_level_imports(ROOT / "examples"))
    runtime = _declared()
    assert {_DIST.get(n, n).lower() for n in package} <= runtime
    missing = {_DIST.get(n, n).lower() for n in tests} - _declared("test")
    assert not missing, f"imported by tests but not in the test extras: {sorted(missing)}"
    bench = _third_party(_top_level_imports(ROOT / "benchmarks"))
    assert {_DIST.get(n, n).lower() for n in bench} <= _declared("test", "bench")
