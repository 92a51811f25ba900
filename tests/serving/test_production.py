"""Secure by default outside development: COAGENT_ENV=production refuses to start with
development secrets, and the compose stack keeps its secrets in an uncommitted .env."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from dbschema.models import User
from knowledge.settings import DEFAULT_SECRET_KEY, InsecureSettingsError, Settings
from serving.app import create_app
from serving.auth.service import ensure_superuser
from tests.serving.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 48
GOOD_PASSWORD = "a long and random super admin password"


def _production(settings: Settings, **changes: object) -> Settings:
    secure = {
        "coagent_env": "production",
        "secret_key": GOOD_KEY,
        "first_superuser": "root@prod.test",
        "first_superuser_password": GOOD_PASSWORD,
        "cookie_secure": True,
    }
    return settings.model_copy(update={**secure, **changes})


def test_secure_production_settings_start(settings: Settings) -> None:
    create_app(_production(settings))  # no error
    create_app(_production(settings, first_superuser=None, first_superuser_password=None))


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"secret_key": DEFAULT_SECRET_KEY}, "SECRET_KEY is a published default"),
        ({"secret_key": "change-me"}, "SECRET_KEY is a published default"),
        ({"secret_key": "x" * 31}, "SECRET_KEY has 31 characters (at least 32)"),
        ({"secret_key": ""}, "SECRET_KEY has 0 characters"),
        ({"first_superuser_password": "change-me-now"}, "FIRST_SUPERUSER_PASSWORD is a published"),
        ({"first_superuser_password": "Changethis"}, "FIRST_SUPERUSER_PASSWORD is a published"),
        ({"first_superuser_password": "short-pw"}, "FIRST_SUPERUSER_PASSWORD has 8 characters"),
        ({"cookie_secure": False}, "COOKIE_SECURE is false"),
    ],
)
def test_each_insecure_setting_is_refused(
    settings: Settings, changes: dict[str, object], refused: str
) -> None:
    with pytest.raises(InsecureSettingsError) as error:
        create_app(_production(settings, **changes))
    assert error.value.problems == [p for p in error.value.problems if refused in p]
    assert len(error.value.problems) == 1
    assert refused in str(error.value)


def test_every_refused_setting_is_listed_at_once(settings: Settings) -> None:
    insecure = _production(
        settings,
        secret_key=DEFAULT_SECRET_KEY,
        first_superuser_password="change-me-now",
        cookie_secure=False,
    )
    with pytest.raises(InsecureSettingsError) as error:
        create_app(insecure)
    message = str(error.value)
    assert message.startswith("COAGENT_ENV=production refuses to start:")
    for name in ("SECRET_KEY", "FIRST_SUPERUSER_PASSWORD", "COOKIE_SECURE"):
        assert name in message
    assert len(error.value.problems) == 3
    # Development: the same settings start (with warnings).
    create_app(insecure.model_copy(update={"coagent_env": "development"}))


async def test_no_super_admin_is_created_with_a_default_password(
    api: Api, settings: Settings
) -> None:
    insecure = _production(
        settings, first_superuser="prod.root@serving.test", first_superuser_password="changeme"
    )
    with pytest.raises(InsecureSettingsError):
        await ensure_superuser(api.session, insecure)
    count = await api.session.scalar(
        select(func.count()).select_from(User).where(User.email == "prod.root@serving.test")
    )
    assert count == 0


def test_coagent_serve_exits_with_the_list_before_touching_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    env = {
        **os.environ,
        "COAGENT_ENV": "production",
        "SECRET_KEY": "short",
        "FIRST_SUPERUSER": "root@prod.test",
        "FIRST_SUPERUSER_PASSWORD": "change-me-now",
        "COOKIE_SECURE": "false",
        "COAGENT_DATA_DIR": str(data_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "coagent.cli", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "COAGENT_ENV=production refuses to start" in done.stderr
    for name in ("SECRET_KEY has 5 characters", "FIRST_SUPERUSER_PASSWORD", "COOKIE_SECURE"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr
    assert not data_dir.exists()  # no database was started, migrated or written


# the compose stack


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


APP_SERVICES = ("migrate", "api", "dagster-webserver", "dagster-daemon")
SECRETS = (
    "SECRET_KEY",
    "FIRST_SUPERUSER_PASSWORD",
    "POSTGRES_PASSWORD",
    "NEO4J_PASSWORD",
    "OPENAI_API_KEY",
)


def test_compose_runs_in_production_with_secrets_from_an_env_file() -> None:
    services = _compose()["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["environment"]["COAGENT_ENV"] == "production", name
        assert service["env_file"] == ".env", name
        for secret in SECRETS:  # never a default in compose itself
            assert secret not in service["environment"], (name, secret)
    text = (ROOT / "compose.yaml").read_text()
    assert not re.search(r"PASSWORD:-|SECRET_KEY:-|change-me", text)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )


def test_the_dagster_ui_is_bound_to_localhost() -> None:
    services = _compose()["services"]
    assert services["dagster-webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    for name, service in services.items():
        for port in service.get("ports", []):
            if name != "api":
                assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert users, "the Dockerfile never leaves root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_env_example_is_committed_and_env_is_ignored(settings: Settings) -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    assert set(SECRETS) <= set(example)
    # The example as it stands must not start in production: its secrets are blank.
    as_is = _production(
        settings,
        secret_key=example["SECRET_KEY"],
        first_superuser_password=example["FIRST_SUPERUSER_PASSWORD"],
        cookie_secure=example["COOKIE_SECURE"] == "true",
    )
    problems = as_is.production_problems()
    assert len(problems) == 2 and "SECRET_KEY" in problems[0]
