//! Both real service binaries, started as processes, talking as they do in
//! production. One test binary, so cargo links it once.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod http;
mod kafka;
mod nats;
mod postgres;
mod readme;
mod redact;
mod sasl;
mod startup;
mod tls;
mod trace;
mod transports;
