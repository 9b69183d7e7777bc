"""docker/ without Docker (no engine here): lint ``compose.yaml``, ``Dockerfile`` and
``nginx.conf`` against each other and against slyker's settings, run ``nginx -t`` on the test
copy of ``nginx.conf`` (``tests/live_nginx.py``), and run the image's start command and health
check on this machine (the virtualenv standing in for the image's Python).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from slyker.settings import load_settings
from tests.live_nginx import (
    DOCKER_DIR,
    HOST,
    NGINX_CONF,
    REPO_ROOT,
    START_TIMEOUT,
    Ports,
    blocks,
    committed_config,
    free_port,
    make_certificate,
    nginx_check,
    nginx_map,
    render_config,
    server_env,
    stop_process,
    strip_comments,
    tail,
    wait_for_health,
)

COMPOSE = DOCKER_DIR / "compose.yaml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
SERVICES = {"api", "postgres", "redis", "nginx"}
API_BASE_IMAGE = "python:3.11-slim"
# What each image ships that a health check may call. From the images' own Dockerfiles
# (docker-library/python, postgres, redis; nginxinc/docker-nginx): python:*-slim is Debian
# with Python (no curl, no wget); postgres and redis (alpine) have their client tools and
# busybox (sh, grep, wget); the Debian-based nginx image installs curl (its alpine-slim variant
# does not).
IMAGE_TOOLS: dict[str, frozenset[str]] = {
    API_BASE_IMAGE: frozenset({"python", "sh"}),
    "postgres:16-alpine": frozenset({"pg_isready", "psql", "sh", "grep", "wget"}),
    "redis:7-alpine": frozenset({"redis-cli", "sh", "grep", "wget"}),
    "nginx:1.28": frozenset({"nginx", "curl", "sh", "grep"}),
}
# The settings the api must get from the env file (compose's env_file or ${...} from it).
API_ENV_FROM_FILE = ("SECRET_KEY", "CORS_ALLOWED_ORIGINS", "DATABASE_URL", "REDIS_URL")
SECRETS = ("SECRET_KEY", "POSTGRES_PASSWORD")
TEST_SECRETS = {
    "SECRET_KEY": "compose-test-secret-key-0123456789abcdef",
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
}
ENTRY_PREFIX = (
    "python -m slyker check && python -m slyker migrate && "
    "exec python -m slyker serve --config hypercorn.toml --bind "
)
STOP_TIMEOUT = 10.0
HEALTHCHECK_TIMEOUT = 10.0


# --- reading the files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` and ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        current = env.get(name)
        empty = current is None or (current == "" and operator and operator.startswith(":"))
        if operator in (":-", "-") and empty:
            return str(argument)
        if operator in (":?", "?") and empty:
            raise AssertionError(f"compose would stop: {name}: {argument}")
        return current or ""

    return _VARIABLE.sub(replace, value)


def variables(value: str) -> set[str]:
    return {match.group(1) for match in _VARIABLE.finditer(value) if match.group(1)}


def env_files(service: dict[str, Any]) -> list[str]:
    value = service.get("env_file", [])
    items = value if isinstance(value, list) else [value]
    return [item["path"] if isinstance(item, dict) else item for item in items]


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):
        return dict(item.partition("=")[::2] for item in value)
    return {name: str(item) for name, item in value.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def instruction(name: str) -> list[str]:
    return [arguments for found, arguments in dockerfile_instructions() if found == name]


def dockerfile_healthcheck() -> list[str]:
    (arguments,) = instruction("HEALTHCHECK")
    options, _, command = arguments.partition(" CMD ")
    assert all(option.startswith("--") for option in options.split()), options
    argv = json.loads(command)
    assert isinstance(argv, list)
    return argv


def dockerfile_cmd() -> list[str]:
    (arguments,) = instruction("CMD")
    argv = json.loads(arguments)
    assert isinstance(argv, list)
    return argv


def healthcheck_tools(test: str | list[str]) -> list[str]:
    """The programs a compose health check runs (every command of a CMD-SHELL pipeline)."""
    if isinstance(test, list) and test[0] == "CMD":
        return [test[1]]
    script = test[1] if isinstance(test, list) else test
    if isinstance(test, list):
        assert test[0] == "CMD-SHELL", test
    segments = re.split(r"\|\||&&|[|;]", script)
    return [shlex.split(segment)[0] for segment in segments if segment.strip()]


def image_of(name: str, service: dict[str, Any]) -> str:
    if "build" in service:
        build = service["build"]
        context = (DOCKER_DIR / build["context"]).resolve()
        assert context == REPO_ROOT, f"{name}: build context {context}"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        (base,) = instruction("FROM")
        return base
    return str(service["image"])


# --- compose.yaml ------------------------------------------------------------------------------


def test_the_four_services(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == SERVICES


def test_only_nginx_publishes_ports(compose: dict[str, Any]) -> None:
    published = {name for name, service in services(compose).items() if service.get("ports")}
    assert published == {"nginx"}
    targets = {int(str(port).rsplit(":", 1)[-1]) for port in services(compose)["nginx"]["ports"]}
    assert targets == {80, 443}
    assert "ports" not in services(compose)["api"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_health_check_uses_a_tool_of_its_image(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    image = image_of(name, service)
    assert image in IMAGE_TOOLS, f"{name}: {image} is not in the table of image tools"
    check = service["healthcheck"]
    tools = healthcheck_tools(check["test"])
    assert tools and set(tools) <= IMAGE_TOOLS[image], f"{name}: {tools} not all in {image}"
    for bound in ("interval", "timeout", "retries"):
        assert bound in check, f"{name}: healthcheck without {bound}"


def test_api_waits_for_healthy_database_and_redis(compose: dict[str, Any]) -> None:
    depends = services(compose)["api"]["depends_on"]
    for name in ("postgres", "redis"):
        assert depends[name]["condition"] == "service_healthy"
    nginx_depends = services(compose)["nginx"]["depends_on"]
    assert nginx_depends["api"]["condition"] == "service_healthy"


def test_api_settings_come_from_the_env_file(compose: dict[str, Any]) -> None:
    api = services(compose)["api"]
    assert ".env" in env_files(api), "the api's env_file is docker/.env"
    example = read_env_file(ENV_EXAMPLE)
    explicit = environment(api)
    for name in API_ENV_FROM_FILE:
        if name in explicit:
            # Built by compose from docker/.env values, never a literal.
            assert variables(explicit[name]) <= set(example), (name, explicit[name])
        else:
            assert name in example, f"{name} is neither in .env.example nor built from it"
    for secret in SECRETS:
        assert secret in example and example[secret] == "", f"{secret}: blank in the example"
        for service in services(compose).values():
            value = environment(service).get(secret)
            assert value is None or variables(value) == {secret}, f"{secret} literal in compose"


def environment_of(compose: dict[str, Any]) -> dict[str, str]:
    return environment(services(compose)["api"])


def test_the_example_env_file_gives_valid_production_settings(compose: dict[str, Any]) -> None:
    dotenv = {**read_env_file(ENV_EXAMPLE), **TEST_SECRETS}
    env = dict(dotenv)
    env.update({k: interpolate(v, dotenv) for k, v in environment_of(compose).items()})
    settings = load_settings(environ=env)
    assert settings.debug is False
    database = urlsplit(settings.database_url)
    assert (database.scheme, database.hostname, database.port) == ("postgres", "postgres", 5432)
    assert database.password == TEST_SECRETS["POSTGRES_PASSWORD"]
    postgres = {
        k: interpolate(v, dotenv) for k, v in environment(services(compose)["postgres"]).items()
    }
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    assert settings.redis_url is not None and urlsplit(settings.redis_url).hostname == "redis"
    assert all(origin.startswith("https://") for origin in settings.cors_allowed_origins)


def test_nginx_mounts_the_committed_config_and_certificates(compose: dict[str, Any]) -> None:
    dotenv = read_env_file(ENV_EXAMPLE)
    mounts = {}
    for volume in services(compose)["nginx"]["volumes"]:
        source, target, *mode = interpolate(str(volume), dotenv).split(":")
        mounts[target] = (source, mode)
    source, mode = mounts["/etc/nginx/nginx.conf"]
    assert (DOCKER_DIR / source).resolve() == NGINX_CONF and mode == ["ro"]
    certificates = re.findall(r"ssl_certificate(?:_key)?\s+(\S+);", committed_config())
    assert len(certificates) == 2
    for path in certificates:
        assert Path(path).parent.as_posix() in mounts, f"{path} is not in a mounted directory"
    (webroot,) = re.findall(r"root\s+(\S+);", committed_config())
    assert webroot in mounts, "the ACME webroot is not mounted"


def test_nginx_upstream_is_the_api_service(compose: dict[str, Any]) -> None:
    (upstream,) = blocks(committed_config(), "upstream slyker_api")
    servers = re.findall(r"server\s+([^\s;]+)", upstream)
    assert servers == ["api:8000"]
    assert "8000" in [str(port) for port in services(compose)["api"]["expose"]]
    (expose,) = instruction("EXPOSE")
    assert expose == "8000"


# --- nginx.conf: the app is the single source of CORS -----------------------------------------


def test_nginx_writes_cors_headers_only_on_its_own_errors() -> None:
    text = strip_comments(committed_config())
    (error_location,) = blocks(text, "location = /_slyker_nginx_error")
    assert "internal;" in error_location
    outside = text.replace(error_location, "")
    assert "add_header" not in outside, "add_header outside the error location"
    assert "access-control" not in outside.lower(), "a CORS header outside the error location"
    assert "proxy_intercept_errors" not in text, "the app's own error responses must pass"
    for status in ("502", "503", "504"):
        assert re.search(rf"error_page\s[^;]*\b{status}\b[^;]*/_slyker_nginx_error;", text)
    # The Origin is only ever the allow-list map's input (and logged): never a header value.
    rest = re.sub(r"log_format[^;]*;", "", text).replace("map $http_origin $slyker_cors_origin", "")
    (allow_list,) = blocks(text, "map $http_origin $slyker_cors_origin")
    assert "$http_origin" not in rest.replace(allow_list, "")


def test_nginx_allow_list_never_reflects_an_unchecked_origin() -> None:
    allow = nginx_map(committed_config(), "$http_origin", "$slyker_cors_origin")
    assert allow.pop("default") == ""
    for key, value in allow.items():
        if key.startswith("~"):
            assert key.startswith(("~^", "~*^")) and key.endswith("$"), f"unanchored {key}"
        else:
            assert value == key, f"{key} -> {value}: an exact entry answers itself"


def test_nginx_allow_list_matches_the_env_file_origins() -> None:
    allow = nginx_map(committed_config(), "$http_origin", "$slyker_cors_origin")
    exact = {key for key in allow if key != "default" and not key.startswith("~")}
    origins = read_env_file(ENV_EXAMPLE)["CORS_ALLOWED_ORIGINS"].split(",")
    assert exact == {origin.strip() for origin in origins if origin.strip()}


def test_nginx_t_accepts_the_test_copy(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path / "certs")
    ports = Ports(http=free_port(), tls=free_port(), upstream=free_port())
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_config(committed_config(), tmp_path, ports, cert, key))
    result = nginx_check(conf)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test is successful" in output, output
    warnings = [
        line
        for line in output.splitlines()
        if "[warn]" in line and 'the "listen ... http2" directive is deprecated' not in line
    ]
    assert not warnings and "[emerg]" not in output, output


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_and_installs_the_package() -> None:
    assert instruction("FROM") == [API_BASE_IMAGE]
    (user,) = instruction("USER")
    assert user.split(":")[0] not in ("root", "0")
    names = [name for name, _ in dockerfile_instructions()]
    assert names.index("USER") < names.index("CMD")
    runs = " ".join(instruction("RUN"))
    assert re.search(r"\bpip install \.(\s|$)", runs)
    copies = instruction("COPY")
    for path in ("migrations", "hypercorn.toml"):
        assert any(path in copy for copy in copies), f"{path} not copied"


def test_dockerfile_start_command() -> None:
    argv = dockerfile_cmd()
    assert argv[:2] == ["sh", "-c"]
    assert argv[2].startswith(ENTRY_PREFIX), argv[2]
    assert argv[2].endswith("'slyker:create_app()'")


def test_compose_api_health_check_is_the_images(compose: dict[str, Any]) -> None:
    image = dockerfile_healthcheck()
    assert image[0] == "python"
    assert services(compose)["api"]["healthcheck"]["test"] == ["CMD", *image]


# --- the image's start command and health check, run here --------------------------------------


def container_env(tmp_path: Path, port: int, **settings: str) -> dict[str, str]:
    """The image's environment, approximately: the virtualenv's python and hypercorn first on
    PATH, BIND and DATA_DIR as the Dockerfile sets them, and the settings of docker/.env."""
    env = server_env(BIND=f"{HOST}:{port}", DATA_DIR=str(tmp_path / "data"), **settings)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_healthcheck(env: dict[str, str]) -> int:
    return subprocess.run(
        dockerfile_healthcheck(),
        env=env,
        capture_output=True,
        timeout=HEALTHCHECK_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    ).returncode


class Starter:
    """Starts the image's CMD here; every process it started is stopped in teardown."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("wb") as log_file:
            process = subprocess.Popen(
                dockerfile_cmd(),
                cwd=REPO_ROOT,  # the image's WORKDIR holds hypercorn.toml, as the repository does
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def log(self) -> str:
        return tail(self.log_path)


@pytest.fixture
def starter(tmp_path: Path) -> Iterator[Starter]:
    starter = Starter(tmp_path / "entry.log")
    try:
        yield starter
    finally:
        for process in starter.processes:
            stop_process(process, signal.SIGTERM)


def test_start_command_serves_and_the_health_check_sees_it(
    tmp_path: Path, starter: Starter
) -> None:
    port = free_port()
    example = read_env_file(ENV_EXAMPLE)
    env = container_env(
        tmp_path,
        port,
        SECRET_KEY=TEST_SECRETS["SECRET_KEY"],
        CORS_ALLOWED_ORIGINS=example["CORS_ALLOWED_ORIGINS"],
        ALLOWED_HOSTS=example["ALLOWED_HOSTS"],
    )
    process = starter.start(env)
    problem = wait_for_health(port, process, START_TIMEOUT)
    assert problem is None, f"{problem}\n{starter.log()}"
    output = starter.log()
    assert "settings OK" in output and "migrations applied" in output, output
    assert run_healthcheck(env) == 0, starter.log()
    stop_process(process, signal.SIGTERM)  # exec: the signal reaches the supervisor itself
    assert process.returncode == 0, f"exit {process.returncode}\n{starter.log()}"
    assert run_healthcheck(env) != 0, "the health check passes with the API down"


def test_start_command_stops_on_bad_settings(tmp_path: Path, starter: Starter) -> None:
    port = free_port()
    process = starter.start(container_env(tmp_path, port))  # no SECRET_KEY
    deadline = time.monotonic() + START_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.returncode == 1, starter.log()
    output = starter.log()
    assert "SECRET_KEY" in output and "migrations applied" not in output, output
