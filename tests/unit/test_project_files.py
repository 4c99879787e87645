"""What can be checked of the deployment files without Docker, and the README against the code."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extras bring tomli on 3.10
    import tomli as tomllib

from worker.cli import main
from worker.console.settings import environment_variables as console_variables
from worker.settings import environment_variables

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def load_smoke() -> ModuleType:
    """``scripts/smoke-artifact`` as a module (it has no ``.py``; it runs nothing on import)."""
    path = ROOT / "scripts" / "smoke-artifact"
    loader = importlib.machinery.SourceFileLoader("smoke_artifact", str(path))
    spec = importlib.util.spec_from_loader("smoke_artifact", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def procfile_lines() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if line)}


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


def test_compose_publishes_ports_on_loopback_only() -> None:
    # The sandbox accepts any token: published on every interface, anyone on the network
    # could post to it (and read what it prints in its logs).
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["sandbox"]["ports"], "the sandbox publishes no port"
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)


def test_procfile_and_dockerfile_run_the_worker() -> None:
    assert shlex.split(procfile_lines()["worker"]) == ["limechat-events", "worker"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["limechat-events", "worker"]' in dockerfile
    for copied in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (ROOT / copied).exists(), copied
    # The image installs the package alone, as users do (no extras), and its build fails if
    # the worker's transport cannot import.
    assert re.search(r"\bpip install \.(\s|$)", dockerfile)
    assert "import kombu.transport.redis" in dockerfile


def test_the_package_alone_brings_what_kombus_redis_transport_imports() -> None:
    """Our dependencies, without extras, followed through the installed distributions."""
    needed: set[str] = set()
    todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    todo = [r for r in todo if r.marker is None or r.marker.evaluate()]  # (tomli: 3.10 only)
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in needed:
            continue
        needed.add(key)
        for line in importlib.metadata.requires(req.name) or []:
            dep = Requirement(line)
            env = [{"extra": extra} for extra in req.extras] or [{"extra": ""}]
            if dep.marker is None or any(Marker(str(dep.marker)).evaluate(e) for e in env):
                todo.append(dep)
    names = {key.split("[")[0] for key in needed}
    # kombu.transport.redis imports packaging; kombu declares it only under its redis extra.
    assert "packaging" in names, sorted(names)
    assert "redis" in names


def test_the_declared_floors_parse_and_support_the_code() -> None:
    smoke = load_smoke()
    dependencies = PYPROJECT["project"]["dependencies"]
    floors = smoke.declared_floors(dependencies)
    assert set(floors) == {Requirement(r).name.lower() for r in dependencies}
    for name, floor in floors.items():
        # Each floor is a version the range admits, and the dev environment is within it.
        req = next(Requirement(r) for r in dependencies if Requirement(r).name.lower() == name)
        assert Version(floor) in req.specifier, (name, floor, req)
        if req.marker is not None and not req.marker.evaluate():
            continue  # (not for this Python: tomli, on 3.10 only)
        assert Version(importlib.metadata.version(name)) >= Version(floor), name
    # worker/transport.py subclasses kombu 5.7's Redis transport (_flush_brpop_reauth).
    assert Version(floors["kombu"]) >= Version("5.7"), floors["kombu"]
    assert Version(floors["celery"]) >= Version("5.7"), floors["celery"]
    assert "redis" in Requirement(next(r for r in dependencies if r.startswith("celery"))).extras
    assert smoke.declared_floors(PYPROJECT["build-system"]["requires"])
    assert smoke.oldest_python_minor(PYPROJECT["project"]["requires-python"]) == "3.10"


@pytest.mark.parametrize(
    "requirement",
    ["celery", "celery<6", "celery>5.7", "celery>=5.7,>=5.8", "celery>=5.7.*", "celery==5.7"],
)
def test_a_dependency_without_one_plain_floor_is_refused(requirement: str) -> None:
    smoke = load_smoke()
    with pytest.raises(smoke.SmokeFailure, match="exactly one floor"):
        smoke.declared_floors([requirement])
    assert smoke.declared_floors(["Sentry_SDK[x] >=2.0, <3 ; python_version>'3'"]) == {
        "sentry-sdk": "2.0"
    }


def test_the_smoke_starts_the_worker_with_the_procfiles_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smoke = load_smoke()
    (tmp_path / "Procfile").write_text("web: gunicorn app\nworker:  limechat-events worker -x \n")
    assert smoke.procfile_command(tmp_path) == "limechat-events worker -x"

    run = smoke.Smoke(oldest=False, keep=False)
    started: list[tuple[str, list[str], dict[str, str]]] = []

    def start(name: str, argv: list[str], env: dict[str, str]) -> Any:
        started.append((name, argv, env))

    monkeypatch.setattr(run, "start", start)
    try:
        run.start_worker()
    finally:
        run.cleanup()
    [(_, argv, env)] = started
    assert argv == ["sh", "-c", procfile_lines()["worker"]]
    assert env["PATH"].split(os.pathsep)[0] == str(run.venv / "bin")
    assert env["LIMECHAT_WORKER_PROCESSES"] == "2"


def test_the_readme_documents_every_variable_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", readme, flags=re.M))
    declared = {**environment_variables(), **console_variables()}
    for name, default in declared.items():
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
    # ... and the artefact smoke, both ways.
    assert re.search(r"^scripts/smoke-artifact$", ci, flags=re.M)
    assert re.search(r"^scripts/smoke-artifact --oldest$", ci, flags=re.M)
    assert os.access(ROOT / "scripts" / "smoke-artifact", os.X_OK)


def test_the_wheel_lists_every_package() -> None:
    """setuptools takes only the packages named: a subpackage left out (worker.cli) would
    leave the installed console script without its commands."""
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("producer", "worker")
        for init in (ROOT / top).rglob("__init__.py")
    }
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    data = set(PYPROJECT["tool"]["setuptools"]["package-data"])
    assert listed - data == found
    # Data folders listed as packages ship their files (package-data) and must exist.
    assert all((ROOT / Path(*name.split("."))).is_dir() for name in data)
