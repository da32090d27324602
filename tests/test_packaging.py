"""pyproject.toml ranges, the requirements.txt lock, environment.yml and the installed venv agree."""

from __future__ import annotations

import importlib.metadata
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

DEV_ONLY = {"pytest", "pytest-xdist", "execnet", "ruff", "setuptools"}  # the `test` extra (execnet: xdist's) and the build backend


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_pyproject_ranges_contain_the_lock_and_name_every_runtime_pin() -> None:
    lock = _lock()
    declared = [Requirement(r) for r in _project()["dependencies"]]
    names = {canonicalize_name(r.name) for r in declared}
    assert names == set(lock) - DEV_ONLY
    for req in declared:
        assert req.specifier.contains(lock[canonicalize_name(req.name)]), (req, lock[canonicalize_name(req.name)])
    for req in map(Requirement, _project()["optional-dependencies"]["test"]):
        assert req.specifier.contains(lock[canonicalize_name(req.name)]), req


def test_the_venv_runs_the_lock() -> None:
    for name, version in _lock().items():
        assert importlib.metadata.version(name) == version, name


def test_environment_yml_lists_the_lock() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert not any(p.startswith("-r") for p in pip)  # a relative -r breaks once Snakemake copies the file
    assert {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pip} == _lock()
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]


def test_package_data_exists() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["jarvis"]
    for pattern in patterns:
        assert list((ROOT / "src" / "jarvis").glob(pattern)), pattern


def test_documented_environment_variables_are_read() -> None:
    """Every JARVIS_* variable named in the docs or params.yaml is read by the code, the workflow or a script."""
    import re

    docs = [ROOT / "README.md", ROOT / "params.yaml", *sorted((ROOT / "docs").glob("*.md"))]
    named = {v for f in docs if f.is_file() for v in re.findall(r"\bJARVIS_[A-Z_]+\b", f.read_text())}
    readers = [*(ROOT / "src").rglob("*.py"), *(ROOT / "workflow").rglob("*.yaml"), *(ROOT / "workflow").rglob("*.smk"),
               *(ROOT / "scripts").glob("*.sh"), ROOT / "Snakefile"]
    code = "".join(f.read_text() for f in readers)
    assert named and sorted(v for v in named if f"'{v}'" not in code and f'"{v}"' not in code
                            and f"${{{v}" not in code) == []
