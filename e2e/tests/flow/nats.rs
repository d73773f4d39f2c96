//! The NATS environment of the end-to-end tests (scripts/nats.sh); the
//! tests every transport shares are in `transports`.

pub(crate) const SHARED_SERVER: u16 = 4222;

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
