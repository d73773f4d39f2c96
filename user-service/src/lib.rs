//! user-service: user CRUD over HTTP; every change emits a CloudEvent
//! through a transactional outbox, relayed to the audit service over HTTP,
//! Kafka or NATS JetStream.

pub mod access;
pub mod app;
pub mod cli;
pub mod config;
pub mod dead_letters;
pub mod domain;
pub mod error;
pub mod hasher;
pub mod outbox;
pub mod relay;
pub mod retention;
pub mod routes;
pub mod store;

pub use app::Application;
pub use config::Settings;
