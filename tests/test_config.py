"""Settings: every bad value gets its own clear message; a configured App without a secret fails closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bot.__main__ import load_settings
from bot.config import Settings, SettingsError
from bot.secrets import generate_key


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


PEM = _pem()


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    return info.value.problems


def test_defaults_run_without_any_github_settings() -> None:
    settings = Settings.from_env({})
    assert not settings.app_configured
    assert settings.port == 3000
    assert settings.github_api_url == "https://api.github.com"
    assert settings.store_kind == "sqlite"
    assert settings.missing_for_github() == [
        "GITHUB_APP_ID",
        "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH",
        "GITHUB_WEBHOOK_SECRET",
    ]


def test_full_app_configuration_with_escaped_newlines() -> None:
    settings = Settings.from_env(
        {
            "GITHUB_APP_ID": "12345",
            "GITHUB_PRIVATE_KEY": PEM.replace("\n", "\\n"),
            "GITHUB_WEBHOOK_SECRET": "s3cret",
            "GITHUB_API_URL": "https://ghe.example.com/api/v3/",
            "PORT": "8080",
        }
    )
    assert settings.app_configured
    assert settings.github_app_id == 12345
    assert settings.github_private_key == PEM
    assert settings.github_api_url == "https://ghe.example.com/api/v3"
    assert settings.port == 8080


def test_secrets_never_appear_in_repr() -> None:
    settings = Settings.from_env(
        {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": PEM, "GITHUB_WEBHOOK_SECRET": "hunter2-secret"}
    )
    assert "hunter2-secret" not in repr(settings)
    assert "PRIVATE KEY" not in repr(settings)


def test_private_key_from_path(tmp_path: Path) -> None:
    path = tmp_path / "app.pem"
    path.write_text(PEM)
    settings = Settings.from_env(
        {"GITHUB_APP_ID": "7", "GITHUB_PRIVATE_KEY_PATH": str(path), "GITHUB_WEBHOOK_SECRET": "x"}
    )
    assert settings.github_private_key == PEM


def test_app_without_webhook_secret_is_a_startup_error() -> None:
    [problem] = problems({"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": PEM})
    assert problem.startswith("GITHUB_WEBHOOK_SECRET is required")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": "http"}, "PORT must be a whole number, got 'http'"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535, got 70000"),
        ({"GITHUB_APP_ID": "abc", "GITHUB_WEBHOOK_SECRET": "x"}, "GITHUB_APP_ID must be a whole number"),
        ({"GITHUB_API_URL": "api.github.com"}, "GITHUB_API_URL must be an http(s) URL"),
        ({"MONGODB_URI": "localhost:27017"}, "MONGODB_URI must start with mongodb://"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"SECRETS_KEY": "not-a-key"}, "SECRETS_KEY entry 1 is not a Fernet key"),
        ({"WORKER_POLL_INTERVAL": "soon"}, "WORKER_POLL_INTERVAL must be a number of seconds"),
        (
            {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": "hello", "GITHUB_WEBHOOK_SECRET": "x"},
            "GITHUB_PRIVATE_KEY is not a PEM private key",
        ),
        (
            {
                "GITHUB_APP_ID": "1",
                "GITHUB_PRIVATE_KEY_PATH": "/nonexistent/app.pem",
                "GITHUB_WEBHOOK_SECRET": "x",
            },
            "GITHUB_PRIVATE_KEY_PATH: cannot read /nonexistent/app.pem",
        ),
        ({"GITHUB_APP_ID": "1", "GITHUB_WEBHOOK_SECRET": "x"}, "GITHUB_APP_ID is set but GITHUB_PRIVATE_KEY"),
        (
            {"GITHUB_PRIVATE_KEY": PEM, "GITHUB_WEBHOOK_SECRET": "x"},
            "GITHUB_PRIVATE_KEY is set but GITHUB_APP_ID",
        ),
    ],
)
def test_each_bad_value_has_a_specific_message(env: dict[str, str], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(env)), problems(env)


def test_github_oauth_client_pair() -> None:
    settings = Settings.from_env({"GITHUB_CLIENT_ID": " Iv1.0123456789abcdef ", "GITHUB_CLIENT_SECRET": "gh-s3cret\n"})
    assert (settings.github_client_id, settings.github_client_secret) == ("Iv1.0123456789abcdef", "gh-s3cret")
    assert "gh-s3cret" not in repr(settings)
    assert "Iv1.0123456789abcdef" in repr(settings)  # an id, not a secret: it shows in every authorize URL
    unset = Settings.from_env({})
    assert (unset.github_client_id, unset.github_client_secret) == (None, None)


@pytest.mark.parametrize("only", ["GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET"])
def test_github_oauth_client_needs_both_halves(only: str) -> None:
    [problem] = problems({only: "x", "GITHUB_WEBHOOK_SECRET": "s"})
    assert problem.startswith("GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET go together")
    assert "set both or neither" in problem


def test_all_problems_are_reported_at_once() -> None:
    found = problems({"PORT": "x", "LOG_LEVEL": "loud", "GITHUB_API_URL": "nope"})
    assert len(found) == 3


def test_non_rsa_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    [problem] = problems({"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": pem, "GITHUB_WEBHOOK_SECRET": "x"})
    assert "RSA" in problem


def test_local_secrets_key_created_once_with_mode_0600(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data")}
    first = load_settings(env, create_local_key=True)
    second = load_settings(env, create_local_key=True)
    key_file = tmp_path / "data" / "secrets.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first.secrets_keys == second.secrets_keys == (key_file.read_text().strip(),)


def test_configured_secrets_key_wins_over_local_file(tmp_path: Path) -> None:
    key = generate_key()
    settings = load_settings({"DATA_DIR": str(tmp_path), "SECRETS_KEY": key}, create_local_key=True)
    assert settings.secrets_keys == (key,)
    assert not (tmp_path / "secrets.key").exists()
