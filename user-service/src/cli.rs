//! The command line: `user-service` (or `user-service serve`) runs the
//! service, `user-service dead-letters ...` is the operator's command for
//! events the relay gave up on. Settings are environment variables, not
//! flags, as in every deployment (compose, Kubernetes) that runs the
//! service; `--help` lists them (scripts/check-docs.py holds the list to
//! the variables the code reads).

use crate::dead_letters;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "user-service",
    version,
    about = "Users over HTTP; every change emits a CloudEvent through a transactional outbox, \
             relayed to audit-service over HTTP, Kafka or NATS JetStream.",
    after_help = ENVIRONMENT
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (what runs without a command)
    Serve,
    /// List or re-drive the events the relay parked as dead letters, in the
    /// database DATABASE_URL names (it must exist)
    #[command(subcommand)]
    DeadLetters(dead_letters::Command),
}

const ENVIRONMENT: &str = "\
Settings are environment variables (README.md, \"Configuration\", says more about each).
A value that is set but wrong stops the service at start with one line naming it.

Service:
  LISTEN_ADDR=0.0.0.0:3000            where the API listens (host:port)
  DATABASE_URL=sqlite://data/users.db users and the outbox; or postgres://user:password@host:port/db
  EVENT_SOURCE=/user-service          the source of every event
  HASH_CONCURRENCY, HASH_QUEUE_MAX    password hashes at once (CPU count) and waiting (64)
  OUTBOX_RETENTION=7d                 how long delivered events stay in the outbox
  TLS_CERT_FILE, TLS_KEY_FILE         listen with TLS (PEM files)
  MAX_CONNECTIONS=1024, HEADER_READ_TIMEOUT_MS=10000, WRITE_TIMEOUT_MS=30000
  API_TOKENS, METRICS_TOKENS          bearer tokens for the users API and /metrics (unset: open),
                                      comma-separated, or one per line in API_TOKENS_FILE...
  HOSTNAME                            names this replica's relay in the lease table (PostgreSQL)

Delivery:
  EVENT_TRANSPORT=http                http, kafka, nats or mqtt
  PUBLISH_TIMEOUT_MS=10000            one request or acknowledgement
  RELAY_BACKOFF_INITIAL_MS=100, RELAY_BACKOFF_MAX_MS=30000, RELAY_RETRY_AFTER_MAX_MS=600000
  RELAY_MAX_ATTEMPTS=0                0 retries for ever
  RELAY_CONCURRENCY=32, RELAY_LEASE_MS=30000
  DELIVERY_LAG_MAX_MS=60000           the oldest event's wait before delivery is failing
  READINESS=delivery                  /readyz follows delivery, or `database` alone
  HTTP:  AUDIT_URL=http://localhost:8080/, HTTP_CONTENT_MODE=binary, HTTP_BATCH_MAX=100,
         AUDIT_TOKEN (or AUDIT_TOKEN_FILE), AUDIT_CA_FILE
  Kafka: KAFKA_BROKERS=127.0.0.1:9092, KAFKA_TOPIC=audit, and any librdkafka property
         as KAFKA_<PROPERTY> (KAFKA_SECURITY_PROTOCOL=SASL_SSL)
  NATS:  NATS_URL=nats://127.0.0.1:4222, NATS_STREAM=AUDIT, NATS_SUBJECT=audit.events,
         NATS_CONTENT_MODE=binary, NATS_CREDS | NATS_TOKEN | NATS_USER + NATS_PASSWORD
  MQTT:  MQTT_URL=mqtt://127.0.0.1:1883, MQTT_TOPIC=audit, MQTT_CONTENT_MODE=binary,
         MQTT_CLIENT_ID, MQTT_USERNAME + MQTT_PASSWORD, MQTT_CA_FILE

Logs and traces:
  RUST_LOG=info, LOG_FORMAT=json (or pretty)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME, OTEL_*";
