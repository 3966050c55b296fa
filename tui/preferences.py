"""The app's own settings, kept in `preferences.json` in the data folder: who the user is, and how much
disk the saved model state may take. Plain data and file I/O, no Textual."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.documents.stories import User
from talesmith.runtime.errors import InputError

FILE = "preferences.json"
STATE_CAP_MB = 512
"""Default cap on the saved KV state files of all documents together."""


@dataclass(frozen=True)
class Preferences:
    user: User = field(default_factory=User)
    """The user name and persona of every chat that does not set its own."""
    state_cap_mb: int = STATE_CAP_MB
    """The saved model state of all documents together is kept under this many MB (oldest removed first)."""


def load(data_dir: Path) -> Preferences:
    """The preferences in `data_dir`; the defaults when there are none. A damaged file raises InputError."""
    path = Path(data_dir) / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Preferences()
    except (OSError, ValueError) as e:
        raise InputError(f"{path} cannot be read ({e}); fix or delete it to use the defaults") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object; fix or delete it to use the defaults")
    saved_user = data.get("user")
    user: dict[str, Any] = saved_user if isinstance(saved_user, dict) else {}
    cap = data.get("state_cap_mb", STATE_CAP_MB)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        raise InputError(f"{path}: state_cap_mb {cap!r} must be a whole number of MB, 0 or more")
    return Preferences(User(str(user.get("name", "")).strip() or User().name, str(user.get("persona", ""))), cap)


def save(data_dir: Path, preferences: Preferences) -> None:
    data = {
        "user": {"name": preferences.user.name, "persona": preferences.user.persona},
        "state_cap_mb": preferences.state_cap_mb,
    }
    files.write_atomic(Path(data_dir) / FILE, json.dumps(data, ensure_ascii=False, indent=1) + "\n", mode=files.PRIVATE)


def parse_cap(text: str) -> int:
    """A state cap typed by the user; raises InputError naming it."""
    try:
        cap = int(text.strip())
    except ValueError:
        raise InputError(f"state cap {text!r} is not a whole number of MB; type for example 512") from None
    if cap < 0:
        raise InputError(f"state cap {cap} must be 0 (keep none) or more MB")
    return cap


class Store:
    """The preferences the app and its screens share, handed down to each screen: `preferences` read,
    `set_preferences` saves new ones (and says why it could not)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.preferences = Preferences()
        self.error = ""
        """Why the saved preferences could not be read (the defaults are used)."""
        try:
            self.preferences = load(self.data_dir)
        except InputError as e:
            self.error = str(e)

    def set_preferences(self, preferences: Preferences) -> str:
        """Save and use `preferences`; the error, or "" when they were saved."""
        try:
            save(self.data_dir, preferences)
        except OSError as e:
            return f"Could not save your preferences to {self.data_dir}: {e}"
        self.preferences = preferences
        return ""
