//! The integration tests, one binary so they link once.

// A failed unwrap is a failed test, which is what tests want.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod conformance;
mod console;
mod filter;
mod helpers;
mod hostile;
mod ingest_http;
mod kafka;
mod mqtt;
mod nats;
mod poison;
mod process;
mod query;
mod replay;
mod replicas;
mod security;
mod tlog;
