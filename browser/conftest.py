"""Fixtures for the audit console's browser test: both services as real
binaries on loopback (HTTP transport, fresh SQLite files), and headless
Chromium from Debian's package driven by Playwright.

Environment (all optional):
  CARGO_TARGET_DIR   where the debug binaries are (default: target/ in the checkout)
  SCREENSHOTS_DIR    where the screenshots go (default: .cache/browser-screenshots;
                     `SCREENSHOTS_DIR=docs browser/run.sh` refreshes the README's)
  BROWSER_KEEP       keep the temporary folder (service logs, databases)
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug"
CHROMIUM = "/usr/bin/chromium"
# The flags the project runs Chromium with: no sandbox (root, containers), and
# nothing that reaches out to the network on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT = 60.0
ADMIN_TOKEN = "console-admin-token-0123456789"


def screenshots_dir():
    d = Path(os.environ.get("SCREENSHOTS_DIR") or ROOT / ".cache" / "browser-screenshots")
    if not d.is_absolute():
        d = ROOT / d
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None, headers=None):
    """(status, headers, parsed JSON or text) of one HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, hdrs, json.loads(text) if text else None
    except ValueError:
        return status, hdrs, text


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


class Service:
    """One of the binaries, its output in a log file, stopped with SIGTERM."""

    def __init__(self, name, env, tmp):
        binary = TARGET / name
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            pytest.fail(f"MISSING: {binary}; run `cargo build --workspace` first", pytrace=False)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env)
        full_env.update({"LISTEN_ADDR": f"127.0.0.1:{self.port}", "LOG_FORMAT": "json", "RUST_LOG": "info"})
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(binary)], env=full_env, stdout=self._logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            wait_for(self._ready, STARTUP_TIMEOUT, f"{name} /readyz")
        except AssertionError:
            self.stop()
            raise AssertionError(f"{name} did not become ready:\n{self.log.read_text(errors='replace')[-4000:]}")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"exited with {self.proc.returncode}")
        try:
            return request("GET", f"{self.base}/readyz")[0] == 200
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._logf.close()


class Services:
    def __init__(self, audit, users):
        self.audit, self.users = audit, users

    @property
    def console(self):
        return f"{self.audit.base}/console"

    def create_user(self, name):
        """Creates a user and returns its id once its event is in the audit store."""
        status, _, body = request("POST", f"{self.users.base}/v1/user", {"name": name, "password": "correct horse battery"})
        assert status == 201, (status, body)
        uid = body["id"]
        wait_for(lambda: len(self.stored(uid)) == 1, 20, f"the event of user {uid}")
        return uid

    def rename_user(self, uid, name):
        """Renames a user and returns once its event is in the audit store."""
        before = len(self.stored(uid))
        status, _, body = request("PUT", f"{self.users.base}/v1/users/{uid}", {"name": name})
        assert 200 <= status < 300, (status, body)
        wait_for(lambda: len(self.stored(uid)) == before + 1, 20, f"the update event of user {uid}")

    def post_event(self, event):
        status, _, body = request("POST", f"{self.audit.base}/", event, {"Content-Type": "application/cloudevents+json"})
        assert status == 204, (status, body)

    def count(self):
        """How many events are stored (the tests store far fewer than a page)."""
        status, _, body = request("GET", f"{self.audit.base}/v1/events?limit=1000")
        assert status == 200 and body["next_after"] is None, (status, body)
        return len(body["events"])

    def stored(self, subject):
        """The stored events of one subject, oldest first."""
        status, _, body = request("GET", f"{self.audit.base}/v1/events?subject={subject}")
        assert status == 200, (status, body)
        return body["events"]


def signing_key_with_plus_in_verifier_key() -> str:
    """A new log signing key whose verifier key's base64 holds a '+' (about
    every other key does): the console must split `name+id+key` on the first
    two only, and a random key would test that in half the runs."""
    for _ in range(100):
        made = subprocess.run([str(TARGET / "audit-service"), "log-key", "console.test/audit"],
                              capture_output=True, check=True)
        verifier = made.stderr.decode().split("verifier key:")[-1].strip()
        if "+" in verifier.split("+", 2)[2]:
            return made.stdout.decode().strip()
    raise AssertionError("100 keys without a '+' in the verifier key")


@pytest.fixture(scope="session")
def services():
    tmp = Path(tempfile.mkdtemp(prefix="console-browser-"))
    # With the transparency log on (the console checks inclusion proofs) and
    # an admin token (a test erases a user's data).
    key = signing_key_with_plus_in_verifier_key()
    audit = Service("audit-service", {
        "EVENT_TRANSPORT": "http",
        "DATABASE_URL": f"sqlite://{tmp}/audit.db",
        "LOG_SIGNING_KEY": key,
        "ADMIN_TOKENS": ADMIN_TOKEN,
    }, tmp)
    try:
        users = Service("user-service", {
            "EVENT_TRANSPORT": "http",
            "AUDIT_URL": f"{audit.base}/",
            "DATABASE_URL": f"sqlite://{tmp}/users.db",
        }, tmp)
    except BaseException:
        audit.stop()
        raise
    yield Services(audit, users)
    users.stop()
    audit.stop()
    if not os.environ.get("BROWSER_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def playwright_instance():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"MISSING: {CHROMIUM}; install Debian's `chromium` package (scripts/setup.sh does as root)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("MISSING: the Python package `playwright`; run scripts/setup.sh", pytrace=False)
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright_instance, tmp_path):
    """A fresh Chromium profile per test, desktop-sized unless the test resizes it."""
    context = playwright_instance.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 860},
        color_scheme="light",
        reduced_motion="reduce",
    )
    errors = []
    context.on("weberror", lambda e: errors.append(str(e.error)))
    context.errors = errors
    yield context
    context.close()
