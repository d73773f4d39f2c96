//! Types and helpers the user service and the audit service share: the user
//! events and their CloudEvents mapping, the wire-level pieces the CloudEvents
//! SDK leaves out, configuration, broker clients (Kafka, NATS, MQTT),
//! telemetry (logs, traces, metrics and the trace context that travels in
//! events) and problem+json errors.

pub mod auth;
pub mod binding;
pub mod config;
pub mod db;
pub mod event;
pub mod http_log;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod problem;
pub mod rate_limit;
pub mod redact;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod test_ca;
/// Test helpers, compiled always rather than behind a feature: a feature
/// only the tests turn on would make `shared`, and both services above it,
/// a second build for `make run` after `make test`.
pub mod testing;
pub mod tls;
pub mod tracecontext;
pub mod validate;

pub use cloudevents;
