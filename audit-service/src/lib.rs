//! audit-service: receives CloudEvents over HTTP (`POST /`) or a broker, stores
//! each exactly once (in SQLite, or in PostgreSQL shared by replicas), logs
//! one line per stored event, and serves the log back (`GET /v1/events`,
//! `GET /v1/events/stream`, both with CESQL filters, and the `GET /console`
//! web page).

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod error;
pub mod filter;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod replay;
pub mod store;
pub mod tlog;
