//! audit-service: receives CloudEvents over HTTP (`POST /`) and Kafka, stores
//! each exactly once in SQLite, logs one line per stored event, and serves
//! the log back (`GET /v1/events`, `GET /v1/events/stream`, both with CESQL
//! filters, and the `GET /console` web page).

pub mod app;
pub mod config;
pub mod console;
pub mod error;
pub mod filter;
pub mod ingest;
pub mod query;
pub mod store;
