"""Who may rate a task: one secret link per rater, one admin secret, the key that signs cookies and forms.

Kept in ``TASK/access.json`` (format ``harness-rating-access/1``, file mode 0600)::

    {"format": ..., "secret_key": hex, "admin": hex, "raters": {"rater01": hex, ...}}

``harness rate TASK --raters 5`` (or ``--raters names.txt``, one name a line) adds the raters not
there yet; existing raters keep their links, so links sent out stay valid across restarts.
Secrets come from :mod:`secrets` (32 bytes) and are compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import DataError, HarnessError
from harness.rating.task import check_rater

ACCESS_FORMAT = "harness-rating-access/1"
ACCESS_FILE = "access.json"


@dataclass
class Access:
    path: Path
    secret_key: str
    admin: str
    raters: dict[str, str] = field(default_factory=dict)

    def rater_of(self, link: str) -> str | None:
        """The rater whose link secret this is (None when none is)."""
        found = None
        for rater, secret in self.raters.items():  # every comparison made: the time tells nothing
            if hmac.compare_digest(secret.encode(), str(link).encode()):
                found = rater
        return found

    def is_admin(self, secret: str) -> bool:
        return hmac.compare_digest(self.admin.encode(), str(secret).encode())


def load_access(task_folder: str | Path) -> Access | None:
    """The task's access file, None when it has none yet; DataError when malformed."""
    path = Path(task_folder) / ACCESS_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}).") from None
    if (not isinstance(document, dict) or document.get("format") != ACCESS_FORMAT
            or not isinstance(document.get("raters"), dict)
            or not all(isinstance(document.get(k), str) and len(document[k]) >= 32 for k in ("secret_key", "admin"))):
        raise DataError(f"{path}: not a {ACCESS_FORMAT} file; move it away and give --raters again to make new links.")
    return Access(path, document["secret_key"], document["admin"],
                  {check_rater(name): str(secret) for name, secret in document["raters"].items()})


def rater_names(spec: str) -> list[str]:
    """``--raters``: a count N (rater01..raterNN) or a file of names, one a line (# comments)."""
    if spec.strip().isdigit():
        count = int(spec)
        if not 1 <= count <= 999:
            raise HarnessError(f"--raters {spec}: give 1 to 999 raters, or a file of names.")
        width = max(2, len(str(count)))
        return [f"rater{number:0{width}d}" for number in range(1, count + 1)]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise HarnessError(f"--raters {spec}: neither a number nor a file of rater names (one a line).")
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            names.append(check_rater(line))
        except HarnessError as error:
            raise HarnessError(f"{path} line {number}: {error}") from None
    if not names:
        raise HarnessError(f"{path} names no rater.")
    if len(set(names)) != len(names):
        raise HarnessError(f"{path} names a rater twice.")
    return names


def ensure_access(task_folder: str | Path, names: list[str] | None = None) -> Access:
    """The task's access, with a link for every rater in ``names`` (made and saved when missing)."""
    folder = Path(task_folder)
    access = load_access(folder)
    if access is None:
        access = Access(folder / ACCESS_FILE, secrets.token_hex(32), secrets.token_urlsafe(32))
    added = False
    for name in names or []:
        if name not in access.raters:
            access.raters[name] = secrets.token_urlsafe(32)
            added = True
    if added or not access.path.is_file():
        document = {"format": ACCESS_FORMAT, "secret_key": access.secret_key, "admin": access.admin,
                    "raters": access.raters}
        temporary = access.path.with_name(f".{access.path.name}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, access.path)
        except OSError as error:
            raise HarnessError(f"The access file {access.path} cannot be written ({error.strerror}).") from None
    return access
