"""Healthchecks as Docker runs them: CMD runs its arguments, CMD-SHELL runs
`/bin/sh -c`, inside the service's container, every `interval`, killed after
`timeout`; `retries` failures in a row after `start_period` make the
service unhealthy, one success healthy.

Before anything runs, each command the check names is looked up in the
image's list (images.py): a command the image lacks fails the check at once.
When the check runs, its PATH holds only the image's commands, so what the
list says is also what the run finds."""

from __future__ import annotations

import shlex

from .images import Image, stand_in
from .project import Healthcheck

# Where a container's stand-ins for its image's commands are.
BIN = "/.compose-netns/bin"
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "{", "}", "!"}
REDIRECTIONS = {">", ">>", "<", ">&", "<&", ">|", "<>"}
KEYWORDS = {"if", "then", "else", "elif", "fi", "while", "until", "do", "done", "for", "case", "esac", "in"}
BUILTINS = {"exit", "test", "[", "echo", "printf", "true", "false", ":", "cd", "set", "export", "unset",
            "return", "read", "shift", "trap", "wait", "kill", "umask", "type"}
# Words that run the next word as a command: how many arguments (after
# options) come before it. exec and command are builtins, the rest programs.
WRAPPERS = {"exec": 0, "command": 0, "env": 0, "nice": 0, "timeout": 1}


def commands_of(check: Healthcheck) -> list[str]:
    """The programs a healthcheck runs (a shell's builtins are not programs)."""
    if check.test[0] == "CMD":
        return [check.test[1]]
    script = check.test[1]
    if "$(" in script or "`" in script:
        raise ValueError("uses command substitution, which this check cannot follow")
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()<>{}!")
    lexer.whitespace_split = True
    found, at_start, skip_next, wrapper_args = ["sh"], True, False, 0
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            at_start = True
        elif token in REDIRECTIONS or (token[-1] in "<>" and token.rstrip("<>&|").isdigit()):
            skip_next = True  # the redirection's target
        elif not at_start:
            continue
        elif "=" in token and token.split("=", 1)[0].isidentifier():
            continue  # an assignment before the command
        elif token in KEYWORDS or (wrapper_args == 0 and token.startswith("-") and found[-1] in WRAPPERS):
            continue
        elif wrapper_args:
            wrapper_args -= 1
        elif token in WRAPPERS:
            if token not in ("exec", "command"):
                found.append(token)
            wrapper_args = WRAPPERS[token]
        else:
            if token not in BUILTINS:
                found.append(token)
            at_start = False
    return found


def missing_commands(check: Healthcheck, image: Image) -> list[str]:
    return [c for c in commands_of(check) if not image.has(c)]


def stand_ins(image: Image) -> dict[str, str]:
    """For the image's commands on PATH: name -> the program playing it here."""
    found = {}
    for name in image.commands():
        if "/" in name:
            continue
        program = stand_in(name)
        if program:
            found[name] = program
    return found


def argv(check: Healthcheck) -> list[str]:
    if check.test[0] == "CMD":
        return check.test[1:]
    return ["/bin/sh", "-c", check.test[1]]


class Health:
    """One service's health, as Docker tracks it."""

    def __init__(self, check: Healthcheck, started_at: float) -> None:
        self.check = check
        self.started_at = started_at
        self.status = "starting"
        self.failures = 0
        self.last_output = ""

    def record(self, passed: bool, output: str, now: float) -> None:
        self.last_output = output.strip()
        if passed:
            self.status, self.failures = "healthy", 0
            return
        if now - self.started_at < self.check.start_period and self.status == "starting":
            return  # failures in the start period do not count
        self.failures += 1
        if self.failures >= self.check.retries:
            self.status = "unhealthy"
