//! The command line: `audit-service` (or `audit-service serve`) runs the
//! service. Settings are environment variables, not flags, as in every
//! deployment (compose, Kubernetes) that runs the service; `--help` lists
//! them (scripts/check-docs.py holds the list to the variables the code
//! reads).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Erase the data (and its salt) of every event of one subject; the events and
    /// their log entries stay, and the erasure is recorded in the trail
    Erase {
        /// The subject whose events' data is erased
        #[arg(long)]
        subject: String,
    },
    /// Rebuild the transparency log from the stored events and check it against
    /// its latest signed checkpoint, naming the first seq that does not match
    Verify {
        /// A checkpoint saved earlier: the log must be consistent with it
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The verifier key (default: the one of LOG_SIGNING_KEY / LOG_SIGNING_KEY_FILE)
        #[arg(long)]
        key: Option<String>,
    },
    /// Replay stored events to a target, in seq order, following the replay's progress
    /// (it runs here unless a running audit-service takes it first)
    Replay(crate::replay::command::ReplayArgs),
    /// List the replays
    Replays {
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print a new log signing key named ORIGIN (its verifier key goes to stderr)
    LogKey {
        /// The log's origin, e.g. audit.example.com/log
        origin: String,
    },
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

Who may do what (bearer tokens; unset: open, with a warning; the admin door: closed):
  INGEST_TOKENS, READ_TOKENS, METRICS_TOKENS, ADMIN_TOKENS
                                      comma-separated, or one per line in the file named by
                                      INGEST_TOKENS_FILE, READ_TOKENS_FILE...
  INGEST_RATE_LIMIT, INGEST_RATE_BURST, READ_RATE_LIMIT, READ_RATE_BURST
                                      requests a second per client (unset: no limit)
  WRITE_TIMEOUT_MS=30000              a connection whose writes make no progress is closed

Transparency log and erasure:
  TRANSPARENCY_LOG                    on or off (unset: on when a signing key is set)
  LOG_SIGNING_KEY, LOG_SIGNING_KEY_FILE  the note signer key (audit-service log-key ORIGIN)
  LOG_ORIGIN                          the checkpoints' origin (default: the key's name)
  ERASE_ON_TYPES                      event types whose storing erases their subject's data
  RETENTION                           erase the data of events older than this (90d, 36h)

Replays (POST /v1/replays, behind the admin door):
  REPLAY_LEASE_MS=15000               how long a replica holds a replay without renewing; one
                                      that dies mid-replay has it resumed elsewhere after this
  HOSTNAME                            names this replica in a replay's lease (host/pid/random)

Brokers:
  INGEST_BATCH_MAX=1000, INGEST_BATCH_WAIT_MS=5  records per store commit, and the wait for more
  Kafka: KAFKA_BROKERS=127.0.0.1:9092, KAFKA_TOPIC=audit, KAFKA_GROUP_ID=audit-group-id,
         KAFKA_DLQ_TOPIC=audit.dlq, and any librdkafka property as KAFKA_<PROPERTY>
  NATS:  NATS_URL=nats://127.0.0.1:4222, NATS_STREAM=AUDIT, NATS_SUBJECT=audit.events,
         NATS_CONSUMER=audit, NATS_DLQ_SUBJECT=dlq.audit, NATS_DLQ_STREAM=AUDIT_DLQ,
         NATS_ACK_WAIT_MS=30000, NATS_MAX_DELIVER=20,
         NATS_CREDS | NATS_TOKEN | NATS_USER + NATS_PASSWORD
  MQTT:  MQTT_URL=mqtt://127.0.0.1:1883, MQTT_TOPIC=audit, MQTT_GROUP=audit (shared
         subscription $share/<group>/<topic>), MQTT_DLQ_TOPIC=audit.dlq,
         MQTT_CLIENT_ID=audit-service (names the persistent session; one per replica),
         MQTT_SESSION_EXPIRY_SECS=604800, MQTT_USERNAME + MQTT_PASSWORD, MQTT_CA_FILE

Logs and traces:
  RUST_LOG=info, LOG_FORMAT=json (or pretty)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME, OTEL_*";
