"""`python -m compose_netns [options] check|up`: check a compose file
without running it, or bring its services up in namespaces and keep them
until Ctrl-C (for a person to look around; the tests use `Stack`)."""

import argparse
import sys
import threading
from pathlib import Path

from .project import ComposeError, load
from .stack import REPO, Failure, Stack


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m compose_netns", description=__doc__)
    parser.add_argument("-f", "--file", type=Path, default=REPO / "docker-compose.yaml")
    parser.add_argument("--project-directory", type=Path, default=None)
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable of the shell compose would run in (for ${...} in the file)")
    parser.add_argument("command", choices=["check", "up"])
    args = parser.parse_args()
    variables = dict(e.split("=", 1) for e in args.env)
    try:
        project = load(args.file, args.profile, variables, args.project_directory)
    except ComposeError as error:
        print(f"compose-netns: {error}", file=sys.stderr)
        return 1
    stack = Stack(project)
    if args.command == "check":
        problems = stack.check()
        for problem in problems:
            print(f"compose-netns: {problem}", file=sys.stderr)
        return 1 if problems else 0
    with stack:
        try:
            stack.up()
        except Failure as failure:
            print(f"compose-netns: FAILED: {failure}", file=sys.stderr)
            return 1
        print(f"compose-netns: up. The machine's side: ip netns exec {stack.network.host_ns} curl localhost:PORT; Ctrl-C ends it")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


sys.exit(main())
