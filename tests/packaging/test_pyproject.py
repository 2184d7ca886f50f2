"""pyproject.toml ships every package and profile folder, in a form setuptools does not warn about."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_code_and_profile_folder_is_a_listed_package() -> None:
    """A folder left out is missing from non-editable installs (as blockctl_agents.profiler was), and a data
    folder that is not listed makes setuptools warn that it is "absent from the packages configuration"."""
    tool = _config()["tool"]["setuptools"]
    packages = set(tool["packages"])
    for name, folder in tool["package-dir"].items():
        for sub in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in sub.parts or (not any(sub.glob("*.py")) and not any(sub.glob("*.json"))):
                continue
            dotted = ".".join([name, *sub.relative_to(ROOT / folder).parts])
            assert dotted in packages, f"{sub.relative_to(ROOT)} is not in [tool.setuptools] packages"


def test_license_is_an_spdx_string() -> None:
    """A license table makes setuptools >= 77 print a deprecation screen on every install."""
    assert _config()["project"]["license"] == "Apache-2.0"
