//! What both services are built on, so that they behave alike: the HTTP
//! server ([`serve`]) and the middleware in front of every route
//! ([`router`]), the doors
//! and rate limits of their APIs ([`auth`], [`rate_limit`]), logs, traces
//! and metrics ([`telemetry`]), problem+json errors ([`problem`]) and JSON
//! request bodies read into them ([`json_body`]), the
//! signals that stop them ([`shutdown`]), TLS ([`tls`]) and their databases
//! ([`db`]).

pub mod auth;
pub mod config;
pub mod db;
pub mod http_log;
pub mod json_body;
mod json_log;
pub mod openapi;
pub mod problem;
pub mod rate_limit;
pub mod router;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
