"""The three places that name dependencies agree: pyproject.toml, environment.yml and
constraints.txt (the exact versions `make` installs)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}  # conda's name for a package -> PyPI's


def _split(requirement: str) -> tuple[str, str]:
    """'jupyter-book>=1.0,<2' -> ('jupyter-book', '>=1.0,<2'), names normalised."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert m, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    return name, m.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # the pip: section
            assert dep.get("pip") == ["-e ."], "environment.yml's pip section installs the book itself"
            continue
        name, spec = _split(dep)
        if name in {"python", "pip"}:
            continue
        out[CONDA_TO_PYPI.get(name, name)] = spec
    return out


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, spec = _split(line)
            pins[name] = spec.removeprefix("==")
    return pins


def test_environment_yml_names_the_same_packages_as_pyproject():
    py, conda = pyproject_requirements(), conda_requirements()
    assert set(py) == set(conda), (
        f"only in pyproject.toml: {sorted(set(py) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(py))}"
    )
    differ = {n: (py[n], conda[n]) for n in py if py[n] != conda[n]}
    assert not differ, f"version bounds differ (pyproject, environment.yml): {differ}"


def test_environment_yml_python_matches_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    fmaj, fmin = map(int, floor.removeprefix(">=").split(".")[:2])
    assert (major, minor) >= (fmaj, fmin)


def test_constraints_pin_every_dependency_and_torch_2_13():
    pins = constraints()
    missing = sorted(set(pyproject_requirements()) - set(pins))
    assert not missing, f"constraints.txt does not pin: {missing}"
    assert pins["torch"] == "2.13.0"
