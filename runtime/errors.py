"""The errors a user can cause. Each carries one line that names the value and the fix.

Library code raises these; the CLI prints the message as one line and exits with status 2,
the terminal app shows it as a notification.
"""


class TalesmithError(Exception):
    """Base of every error caused by user input (a path, a file, a setting, a prompt)."""


class SettingsError(TalesmithError, ValueError):
    """An invalid sampling setting, preset or configuration value."""


class ModelError(TalesmithError):
    """A model file that is missing, not a GGUF, truncated, or cannot be loaded."""


class ContextOverflowError(TalesmithError):
    """A prompt that does not fit the model's context and may not be trimmed."""


class InputError(TalesmithError):
    """An input file (batch rows, config file) that cannot be read or has the wrong shape."""


class ConversionError(TalesmithError):
    """A checkpoint, adapter or option that conversion cannot use."""


# The same kinds of error, for one kind of thing each.


class HashMismatchError(ModelError):
    """A file whose bytes are not the ones the lock pins."""


class VerifyError(ModelError):
    """`talesmith models verify` found files that are missing or altered."""


class HubError(ModelError):
    """The hub refused, could not be reached, or a download stopped half-way."""


class HubUnreachable(HubError):
    """The hub cannot be asked at all: offline mode, or no connection."""


class LockError(InputError):
    """A models.lock that cannot be read, or an entry with the wrong shape."""


class CardError(InputError):
    """A character card that cannot be read."""


class TemplateError(TalesmithError):
    """A chat template (from a model file, a file or a preset) that breaks, escapes its sandbox or runs away."""
