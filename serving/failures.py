"""Why a pod or revision is not running, in Knative's and the kubelet's words. Pure functions.

A pod's process that ends becomes a ``Failure``: ``ExitCode<N>`` with the last log line (what
Knative's revision status shows for a crashing container), ``ImagePullBackOff`` with the
runtime's one-line message when Podman or Docker could not get the image, ``StartError``
naming the executable that does not exist. A revision that has not become ready within its
``serving.knative.dev/progress-deadline`` (Knative's default 600 s) is failed with
``ProgressDeadlineExceeded`` and the last probe error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"
#: Knative's default ``progress-deadline`` (config-deployment), in seconds.
DEFAULT_PROGRESS_DEADLINE = 600.0
PULL_BACKOFF = "ImagePullBackOff"
START_ERROR = "StartError"
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
#: Podman's and Docker's own failures (not the container's) exit with these codes.
_RUNTIME_EXIT_CODES = (125,)
_NOT_FOUND_EXIT_CODES = (126, 127)
_PULL_WORDS = re.compile(
    r"pull|initializing source|manifest unknown|image not known|pinging container registry"
    r"|unable to find image|repository does not exist|requested access to the resource",
    re.IGNORECASE,
)
_NOT_FOUND_WORDS = re.compile(r"not found|no such file|executable file", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@dataclass(frozen=True, slots=True)
class Failure:
    """A Kubernetes-style reason (one CamelCase word) and a one-line message."""

    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


def exit_failure(code: int, last_line: str, *, container: bool) -> Failure:
    """What a process that exited with ``code`` (negative: killed by that signal) means.

    For a container (``container`` true) the runtime's own errors are told apart from the
    app's: exit 125 mentioning a pull is a failed pull, 126/127 a missing executable.
    """
    if code < 0:
        code = 128 - code  # as the kubelet reports a signal: 137 for SIGKILL
    if container and code in _RUNTIME_EXIT_CODES and _PULL_WORDS.search(last_line):
        return Failure(PULL_BACKOFF, last_line)
    runtime_code = code in (*_RUNTIME_EXIT_CODES, *_NOT_FOUND_EXIT_CODES)
    if container and runtime_code and _NOT_FOUND_WORDS.search(last_line):
        return Failure(START_ERROR, last_line)
    return Failure(f"ExitCode{code}", last_line)


def start_failure(exc: OSError, argv0: str, cwd: str) -> Failure:
    """A local process that could not be started at all (``exec`` failed), naming the path."""
    path = exc.filename if isinstance(exc.filename, str) else argv0
    if isinstance(exc, FileNotFoundError):
        if not Path(cwd).is_dir():
            return Failure(START_ERROR, f'working directory "{cwd}" not found')
        where = "in $PATH" if "/" not in path else f"(relative to {cwd})"
        if Path(path).is_absolute():
            where = ""
        return Failure(START_ERROR, f'executable file "{path}" not found {where}'.rstrip())
    if isinstance(exc, PermissionError):
        return Failure(START_ERROR, f'permission denied: "{path}" is not executable')
    return Failure(START_ERROR, f'cannot run "{path}": {exc.strerror or exc}')


def parse_duration(text: str) -> float:
    """A Go ``time.Duration`` string (``600s``, ``10m``, ``1h30m``, ``1.5s``) in seconds;
    ``ValueError`` otherwise."""
    value = text.strip()
    if not value or _DURATION_PART.sub("", value):
        raise ValueError(f'invalid duration "{text}"')
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))


def progress_deadline(annotations: Mapping[str, str]) -> float:
    """The revision's progress deadline in seconds; ``ValueError`` naming the annotation."""
    raw = annotations.get(PROGRESS_DEADLINE_ANNOTATION)
    if raw is None:
        return DEFAULT_PROGRESS_DEADLINE
    try:
        seconds = parse_duration(raw)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError(f'invalid value: "{raw}" (want a positive duration such as 600s)')
    return seconds


def deadline_failure(deadline: float, last_probe_error: str) -> Failure:
    """The revision's failure once ``deadline`` passed without a ready pod."""
    message = f"Initial scale was never achieved within the progress deadline ({deadline:g}s)"
    if last_probe_error:
        message += f"; last probe error: {last_probe_error}"
    return Failure(DEADLINE_EXCEEDED, message)
