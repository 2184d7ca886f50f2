"""The cluster spec: the shipped example is valid; every kind of mistake names file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.cluster.spec import ENGINE_TEMPLATES, json_schema, load_spec, parse_spec
from blockctl.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "blockctl" / "cluster" / "examples" / "cluster.yaml"
MINIMAL = "hosts:\n  - address: gpu-a\nmodel:\n  id: meta-llama/Llama-2-7b-hf\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def test_example_is_valid_and_documents_the_sections() -> None:
    spec = load_spec(EXAMPLE)
    assert [h.label for h in spec.hosts if h.standby] == ["gpu-c"]
    assert spec.engine.kind == "vllm" and spec.engine.needs_gpu
    assert spec.profiles.select("NVIDIA H200 141GB HBM3e") == "h200/llama-2-7b"
    text = EXAMPLE.read_text()
    for section in json_schema()["properties"]:
        assert f"\n{section}:" in text, section


def test_every_shipped_example_is_valid() -> None:
    examples = sorted(EXAMPLE.parent.glob("*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        load_spec(path)


def test_defaults_of_a_minimal_spec(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    host = spec.hosts[0]
    assert (host.label, host.gpus, host.standby, host.port, host.user) == ("gpu-a", "all", False, None, None)
    assert not spec.ssh.insecure_skip_host_key_check  # host keys are checked unless turned off
    assert spec.install.mode == "wheel" and spec.scheduler.daemons == 1
    assert spec.engine.template == ENGINE_TEMPLATES["vllm"]


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (MINIMAL + "engine:\n  kind: custom\n", "engine", "needs engine.command"),
        (MINIMAL.replace("address", "adress"), "hosts[0].adress", "unknown key"),
        (MINIMAL + "ports:\n  engine: 70000\n", "ports.engine", "less than or equal to 65535"),
        (MINIMAL + "engine:\n  command: '{python} -m x --port {prot}'\n", "engine.command", "prot"),
        (MINIMAL + "hosts:\n  - address: a\n    gpus: [x]\n", "hosts[0].gpus[0]", "valid integer"),
        ("hosts: []\nmodel: {id: m}\n", "hosts", "at least 1"),
        (
            MINIMAL + "scheduler: {policy: fastest}\n",
            "scheduler.policy",
            "unknown policy 'fastest'; known: block,",
        ),
        ("hosts:\n  - address: a\n  - address: a\nmodel: {id: m}\n", "(top level)", "two hosts are named"),
    ],
)
def test_errors_name_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert info.value.source == str(path)
    assert key in info.value.message and problem in info.value.message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"at line 3, column 6"):
        load_spec(write(tmp_path, "hosts:\n  - address: [a\nmodel: x\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        parse_spec(["a"], source="x.yaml")


def test_config_cli_check_and_schema(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["config", "check", str(EXAMPLE)])
    assert good.exit_code == 0 and "valid" in good.output
    bad = runner.invoke(app, ["config", "check", str(write(tmp_path, MINIMAL + "sched: {}\n"))])
    flat = bad.output
    assert bad.exit_code == 1 and "cluster.yaml:sched: unknown key" in flat
    schema = runner.invoke(app, ["config", "schema"])
    assert schema.exit_code == 0 and '"hosts"' in schema.output
    assert '"insecure_skip_host_key_check"' in schema.output
