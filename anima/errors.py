"""Errors a user can cause, each with a one-line message and a hint.

    AnimaError                  anything anima reports to the user (exit 1 in the CLI)
    ├── ConfigError             bad TOML, unknown key, invalid value
    ├── ModelNotFound           unknown model name, or model not pulled yet
    ├── ModelCorrupt            a model file whose sha256 does not match
    ├── ModelUnavailable        backend not installed, server unreachable or refusing
    ├── ContextTooLong          prompt longer than the model's context window
    ├── StoreError              data dir not writable, database unreadable
    │   └── WrongPassphrase     the key or passphrase does not open the database
    └── BadInput                empty prompt, unknown persona, bad file
        └── NotFound            no memory / conversation with that id

Everything else is a bug in anima: the CLI prints "internal error" and the log
keeps the traceback; under pytest or ANIMA_DEBUG=1 it is re-raised.
"""

from __future__ import annotations


class AnimaError(Exception):
    code = "anima_error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(AnimaError):
    code = "config_error"


class ModelNotFound(AnimaError):
    code = "model_not_found"


class ModelCorrupt(AnimaError):
    code = "model_corrupt"


class ModelUnavailable(AnimaError):
    code = "model_unavailable"


class ContextTooLong(AnimaError):
    code = "context_length_exceeded"


class StoreError(AnimaError):
    code = "store_error"


class WrongPassphrase(StoreError):
    code = "wrong_passphrase"


class BadInput(AnimaError):
    code = "bad_input"


class NotFound(BadInput):
    code = "not_found"
