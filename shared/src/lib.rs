//! Types and helpers the user service and the audit service share: the user
//! events and their CloudEvents mapping, the wire-level pieces the CloudEvents
//! SDK leaves out, configuration, telemetry (logs, traces, metrics and the trace context
//! that travels in events) and problem+json errors.

pub mod binding;
pub mod config;
pub mod db;
pub mod event;
pub mod kafka;
pub mod problem;
pub mod shutdown;
pub mod telemetry;
pub mod tracecontext;
pub mod validate;

pub use cloudevents;
