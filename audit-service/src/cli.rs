//! The command line: `audit-service` (or `audit-service serve`) runs the
//! service. Settings are environment variables, not flags, as in every
//! deployment (compose, Kubernetes) that runs the service; `--help` lists
//! them (scripts/check-docs.py holds the list to the variables the code
//! reads).

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "audit-service",
    version,
    about = "Receives CloudEvents over HTTP, Kafka or NATS JetStream, stores each exactly once, \
             logs it and serves it back (GET /v1/events, the live tail, the console at /console).",
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
}

const ENVIRONMENT: &str = "\
Settings are environment variables (README.md, \"Configuration\", says more about each).
A value that is set but wrong stops the service at start with one line naming it.

Service:
  LISTEN_ADDR=0.0.0.0:8080            where the sink (POST /) and the API listen (host:port)
  DATABASE_URL=sqlite://data/audit.db the audit store; or postgres://user:password@host:port/db
  EVENT_TRANSPORT=http                also consume kafka or nats (POST / always works)
  MAX_BODY_BYTES=1048576, REQUEST_TIMEOUT_MS=30000, MAX_STREAM_CLIENTS=256
  SHUTDOWN_GRACE_MS=10000             after SIGTERM, for open connections and batches in hand
  TLS_CERT_FILE, TLS_KEY_FILE         listen with TLS (PEM files)
  MAX_CONNECTIONS=1024, HEADER_READ_TIMEOUT_MS=10000

Who may do what (bearer tokens; unset: open, with a warning):
  INGEST_TOKENS, READ_TOKENS, METRICS_TOKENS  comma-separated, or one per line in the file
                                              named by INGEST_TOKENS_FILE, READ_TOKENS_FILE...

Brokers:
  INGEST_BATCH_MAX=1000, INGEST_BATCH_WAIT_MS=5  records per store commit, and the wait for more
  Kafka: KAFKA_BROKERS=127.0.0.1:9092, KAFKA_TOPIC=audit, KAFKA_GROUP_ID=audit-group-id,
         KAFKA_DLQ_TOPIC=audit.dlq, and any librdkafka property as KAFKA_<PROPERTY>
  NATS:  NATS_URL=nats://127.0.0.1:4222, NATS_STREAM=AUDIT, NATS_SUBJECT=audit.events,
         NATS_CONSUMER=audit, NATS_DLQ_SUBJECT=dlq.audit, NATS_DLQ_STREAM=AUDIT_DLQ,
         NATS_ACK_WAIT_MS=30000, NATS_MAX_DELIVER=20,
         NATS_CREDS | NATS_TOKEN | NATS_USER + NATS_PASSWORD

Logs and traces:
  RUST_LOG=info, LOG_FORMAT=json (or pretty)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME, OTEL_*";
