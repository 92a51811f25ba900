"""Per-agent API keys at rest: Fernet (AES-128-CBC + HMAC) under ``FERNET_SECRET_KEY``.

The key is only ever decrypted in the worker that calls the model; the API stores the token
and reports ``has_api_key``. Rotating the key is re-saving it.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from knowledge.errors import InvalidInputError


class SecretsUnavailable(InvalidInputError):
    """No (valid) FERNET_SECRET_KEY, so agent API keys cannot be stored or read."""


def _fernet(secret: str | None) -> Fernet:
    if not secret:
        raise SecretsUnavailable(
            "FERNET_SECRET_KEY is not set: agent API keys cannot be stored (generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key()"
            ".decode())'`)"
        )
    try:
        return Fernet(secret.encode())
    except ValueError as error:
        raise SecretsUnavailable(
            "FERNET_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes)"
        ) from error


def encrypt_secret(secret_key: str | None, value: str) -> str:
    return _fernet(secret_key).encrypt(value.encode()).decode()


def decrypt_secret(secret_key: str | None, token: str) -> str:
    try:
        return _fernet(secret_key).decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise SecretsUnavailable(
            "an agent API key cannot be decrypted with the current FERNET_SECRET_KEY: re-save it"
        ) from error
