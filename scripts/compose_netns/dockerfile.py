"""A Dockerfile read as the build of one target would use it: the chain of
stages from the target down to its base image, with the ENV, WORKDIR, USER,
ENTRYPOINT, CMD, RUN and COPY instructions that make the target's image."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .project import ComposeError


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Copy:
    from_stage: str | None
    sources: list[str]
    dest: str


@dataclass
class Target:
    """What one target's image is made of, bottom stage first."""

    base_image: str
    stages: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    # Every stage of the file by name, for what a COPY --from takes.
    all_stages: dict[str, Stage] = field(default_factory=dict)


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for index, line in enumerate(_logical_lines(path.read_text())):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage-{index}"
            stage = Stage(name, words[0])
            stages[name] = stage
        elif stage is None:
            if keyword != "ARG":
                raise ComposeError(f"{path}: {keyword} before the first FROM")
        else:
            stage.instructions.append((keyword, rest))
    return stages


def _exec_form(text: str) -> list[str]:
    if text.startswith("["):
        return [str(v) for v in json.loads(text)]
    return ["/bin/sh", "-c", text]


def _env_pairs(text: str) -> list[tuple[str, str]]:
    words = shlex.split(text)
    if words and "=" not in words[0]:
        # The old form: ENV NAME value with spaces
        return [(words[0], " ".join(words[1:]))]
    return [(w.partition("=")[0], w.partition("=")[2]) for w in words]


def target(path: Path, name: str) -> Target:
    stages = parse(path)
    if name not in stages:
        raise ComposeError(f"{path}: no stage named {name} (stages: {', '.join(stages)})")
    chain = []
    current = name
    while current in stages:
        chain.append(current)
        current = stages[current].base
    chain.reverse()
    result = Target(base_image=current, stages=chain, all_stages=stages)
    for stage_name in chain:
        entrypoint_set_here = False
        for keyword, rest in stages[stage_name].instructions:
            if keyword == "ENV":
                result.env.update(_env_pairs(rest))
            elif keyword == "WORKDIR":
                result.workdir = rest if rest.startswith("/") else f"{result.workdir.rstrip('/')}/{rest}"
            elif keyword == "USER":
                result.user = rest
            elif keyword == "ENTRYPOINT":
                result.entrypoint = _exec_form(rest)
                # Docker: an ENTRYPOINT resets the CMD inherited from a parent stage.
                if not entrypoint_set_here:
                    result.cmd = []
                entrypoint_set_here = True
            elif keyword == "CMD":
                result.cmd = _exec_form(rest)
            elif keyword == "RUN":
                result.runs.append(rest)
            elif keyword in ("COPY", "ADD"):
                words = shlex.split(rest)
                options = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                source_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
                result.copies.append(Copy(source_stage, paths[:-1], paths[-1]))
            elif keyword in ("EXPOSE", "LABEL", "ARG", "HEALTHCHECK", "STOPSIGNAL", "SHELL", "VOLUME"):
                pass
            else:
                raise ComposeError(f"{path}: stage {stage_name}: {keyword} is not understood here")
    return result
