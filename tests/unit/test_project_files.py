"""What can be checked of the deployment files without Docker, and the README against the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import yaml

from worker.cli import main
from worker.settings import environment_variables

ROOT = Path(__file__).resolve().parents[2]


def cli_command_exists(argv: list[str]) -> bool:
    """True if ``argv`` (``limechat-events ...``) names a real command with valid options."""
    assert argv[0] == "limechat-events", argv
    command: click.Command = main
    args = argv[1:]
    ctx = click.Context(main)
    while isinstance(command, click.Group):
        _, found, args = command.resolve_command(ctx, args)
        if found is None:
            return False
        command = found
    command.make_context(command.name or "", list(args))  # raises on an unknown option
    return True


def test_docker_compose_is_valid_and_names_real_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "worker", "sandbox"}
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert services["redis"]["volumes"][0].split(":")[0] in compose["volumes"]
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert "profiles" not in services["worker"]
    for name in ("worker", "sandbox"):
        assert cli_command_exists(services[name]["command"]), name
    healthcheck = services["worker"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD" and cli_command_exists(healthcheck[1:])
    worker_env = services["worker"]["environment"]
    documented = environment_variables()
    assert set(worker_env) <= set(documented)
    assert worker_env["REDIS_URL"] == "redis://redis:6379/0"


def test_procfile_and_dockerfile_run_the_worker() -> None:
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert shlex.split(procfile["worker"]) == ["limechat-events", "worker"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["limechat-events", "worker"]' in dockerfile
    for copied in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (ROOT / copied).exists(), copied


def test_the_readme_documents_every_variable_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", readme, flags=re.M))
    for name, default in environment_variables().items():
        assert name in rows, f"{name} is not in the README's table"
        if default is None:
            assert "required" in rows[name], name
        elif default == "" or default == 0:
            assert "unset" in rows[name], (name, rows[name])
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert rows[name].strip() == f"`{shown}`", (name, rows[name])


def test_the_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M)
