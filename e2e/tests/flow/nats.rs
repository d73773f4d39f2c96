//! The NATS environment of the end-to-end tests (scripts/nats.sh); the
//! tests every transport shares are in `transports`.

use std::path::PathBuf;
use std::process::Command;

pub(crate) const SHARED_SERVER: u16 = 4222;

fn nats_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats.sh")
}

pub(crate) fn require_shared_server() {
    let up = Command::new(nats_script())
        .arg("status")
        .env("NATSD_PORT", SHARED_SERVER.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        up,
        "no NATS server with JetStream on 127.0.0.1:{SHARED_SERVER}: start one with `make nats-up` (make test does)"
    );
}

/// Both services on NATS with a stream, subject and consumer of their own,
/// so tests don't see each other's events.
pub(crate) fn nats_env(port: u16, tag: &str) -> Vec<(String, String)> {
    vec![
        ("EVENT_TRANSPORT".into(), "nats".into()),
        ("NATS_URL".into(), format!("nats://127.0.0.1:{port}")),
        ("NATS_STREAM".into(), format!("E2E_{tag}")),
        ("NATS_SUBJECT".into(), format!("e2e{tag}.events")),
        ("NATS_CONSUMER".into(), format!("audit-{tag}")),
        ("NATS_DLQ_SUBJECT".into(), format!("dlq{tag}")),
        ("NATS_DLQ_STREAM".into(), format!("E2E_{tag}_DLQ")),
    ]
}
