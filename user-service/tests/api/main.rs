//! One test binary for all of user-service's integration tests, to keep
//! link time low.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod access;
mod batches;
mod binary;
mod delivery;
mod events;
mod hashing;
mod health;
mod helpers;
mod kafka;
mod mqtt;
mod nats;
mod replicas;
mod users;
