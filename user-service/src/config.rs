//! The service's settings, read once from the environment at start.

use brokers::kafka::KafkaConfig;
use brokers::mqtt::MqttConfig;
use brokers::nats::NatsConfig;
use cloudevents_wire::Transport;
use service_kit::config::listen_addr;
use service_kit::serve::ListenSettings;
use settings::BearerToken;
use settings::{env_or, env_parse, ConfigError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the outbox relay sends and retries.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// First retry delay bound (`RELAY_BACKOFF_INITIAL_MS`).
    pub backoff_initial: Duration,
    /// Largest retry delay of our own backoff (`RELAY_BACKOFF_MAX_MS`).
    pub backoff_max: Duration,
    /// Longest `Retry-After` from the receiver that is honoured as sent
    /// (`RELAY_RETRY_AFTER_MAX_MS`); a longer one is cut to this.
    pub retry_after_max: Duration,
    /// Attempts before an event is parked as dead; `None` retries forever
    /// (`RELAY_MAX_ATTEMPTS=0`, the default).
    pub max_attempts: Option<u32>,
    /// How often the relay looks for pending rows nobody woke it for: rows
    /// left from before a restart, or re-driven by an operator.
    pub poll_interval: Duration,
    /// HTTP requests in flight at once (`RELAY_CONCURRENCY`). One user's
    /// events are never in two requests at once.
    pub concurrency: usize,
    /// Most events in one HTTP request (`HTTP_BATCH_MAX`); 1 sends each
    /// event alone, in `HTTP_CONTENT_MODE`.
    pub batch_max: usize,
    /// How long a relay's lease on a bucket of users lasts on a shared
    /// database (`RELAY_LEASE_MS`): a replica that dies holding leases has
    /// its users' events wait this long for another replica.
    pub lease_term: Duration,
    /// How long before its lease may expire a relay stops sending: what a
    /// request in flight may still take (the publish timeout) and a second.
    pub lease_margin: Duration,
    /// `DELIVERY_LAG_MAX_MS`: how long the oldest pending event may wait
    /// before `GET /delivery` says delivery is failing.
    pub lag_max: Duration,
    /// How long a broker publisher may hold records without a single
    /// report while its broker answers before it counts as stuck and is
    /// rebuilt ([`PUBLISHER_STALL`]).
    pub stall_after: Duration,
}

/// librdkafka with no local expiry (`message.timeout.ms=0`) has been seen,
/// after a broker restart under load, to hold thousands of records for
/// minutes without sending them or reporting a failure, while a fresh
/// producer delivers them at once. A healthy producer reconnects within its
/// `reconnect.backoff.max.ms` (10 s), and NATS and MQTT acknowledgements
/// time out by themselves well within this, so 30 s of silence from a
/// publisher whose broker answers is a stuck publisher.
pub const PUBLISHER_STALL: Duration = Duration::from_secs(30);

/// The pool of password hashing threads in front of argon2id.
#[derive(Debug, Clone)]
pub struct HashSettings {
    /// Hashes computed at once, one thread and one 12 MiB working memory
    /// each (`HASH_CONCURRENCY`, default the CPU count).
    pub workers: usize,
    /// Hashes that may wait for a thread (`HASH_QUEUE_MAX`); beyond that a
    /// request is answered 503 with Retry-After.
    pub queue: usize,
}

/// The publisher's settings, shared with audit-service's replays
/// (`publishers`); read here from the environment.
pub use publishers::{ContentMode, HttpClientSettings, MqttSettings, PublishSettings};

/// `EVENT_TRANSPORT=mqtt`'s settings.
pub fn mqtt_from_env(timeout: Duration) -> Result<MqttSettings, ConfigError> {
    Ok(MqttSettings {
        config: MqttConfig::from_env("user-service")?,
        mode: env_parse("MQTT_CONTENT_MODE", ContentMode::Binary)?,
        timeout,
    })
}

/// `AUDIT_TOKEN` (or the file `AUDIT_TOKEN_FILE`) and `AUDIT_CA_FILE`.
pub fn http_client_from_env() -> Result<HttpClientSettings, ConfigError> {
    Ok(HttpClientSettings {
        token: BearerToken::from_env("AUDIT_TOKEN")?,
        ca_file: std::env::var_os("AUDIT_CA_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    })
}

/// Reads `EVENT_TRANSPORT` and the settings of the transport it names.
pub fn publish_from_env() -> Result<PublishSettings, ConfigError> {
    let timeout = Duration::from_millis(publish_timeout_ms()?);
    Ok(match Transport::from_env()? {
        Transport::Http => PublishSettings::Http {
            url: audit_url()?,
            mode: env_parse("HTTP_CONTENT_MODE", ContentMode::Binary)?,
            timeout,
            client: http_client_from_env()?,
        },
        Transport::Kafka => PublishSettings::Kafka {
            config: KafkaConfig::from_env(),
            timeout,
        },
        Transport::Nats => PublishSettings::Nats {
            config: NatsConfig::from_env()?,
            mode: env_parse("NATS_CONTENT_MODE", ContentMode::Binary)?,
            timeout,
        },
        Transport::Mqtt => PublishSettings::Mqtt(mqtt_from_env(timeout)?),
    })
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `LISTEN_ADDR` (see `service_kit::config::listen_addr`); port 0 picks a
    /// free port (tests).
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `EVENT_SOURCE`: the `source` of every event this service emits.
    pub event_source: String,
    pub publish: PublishSettings,
    pub relay: RelaySettings,
    pub hashing: HashSettings,
    /// Longest time one HTTP request may take before it is answered 503.
    pub request_timeout: Duration,
    /// How long delivered outbox rows are kept (`OUTBOX_RETENTION`).
    pub outbox_retention: Duration,
    /// TLS and the HTTP server's limits (`service_kit::serve`).
    pub listen: ListenSettings,
    /// Who may use the API (`crate::access`).
    pub access: crate::access::Access,
    /// `READINESS`: what `/readyz` follows.
    pub readiness: crate::routes::health::Readiness,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let max_attempts: u32 = env_parse("RELAY_MAX_ATTEMPTS", 0)?;
        let backoff_initial = positive("RELAY_BACKOFF_INITIAL_MS", 100)?;
        let backoff_max = positive("RELAY_BACKOFF_MAX_MS", 30_000)?.max(backoff_initial);
        let retry_after_max = positive("RELAY_RETRY_AFTER_MAX_MS", 600_000)?;
        let lease_margin = Duration::from_millis(publish_timeout_ms()? + 1000);
        let lease_term = Duration::from_millis(positive("RELAY_LEASE_MS", 30_000)?);
        if lease_term < 2 * lease_margin {
            return Err(ConfigError {
                name: "RELAY_LEASE_MS".to_owned(),
                value: lease_term.as_millis().to_string(),
                reason: format!(
                    "must be at least twice PUBLISH_TIMEOUT_MS + 1000 ({} ms): a relay stops \
                     sending that long before its lease ends",
                    2 * lease_margin.as_millis()
                ),
            });
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Settings {
            listen_addr: listen_addr(SocketAddr::from(([0, 0, 0, 0], 3000)))?,
            database_url: database_url_from_env()?,
            event_source: env_or("EVENT_SOURCE", "/user-service"),
            publish: publish_from_env()?,
            relay: RelaySettings {
                backoff_initial: Duration::from_millis(backoff_initial),
                backoff_max: Duration::from_millis(backoff_max),
                retry_after_max: Duration::from_millis(retry_after_max),
                max_attempts: (max_attempts > 0).then_some(max_attempts),
                poll_interval: Duration::from_millis(500),
                concurrency: count_in("RELAY_CONCURRENCY", 32, MAX_CONCURRENCY)?,
                batch_max: count_in("HTTP_BATCH_MAX", 100, MAX_BATCH)?,
                lease_term,
                lease_margin,
                lag_max: Duration::from_millis(positive("DELIVERY_LAG_MAX_MS", 60_000)?),
                stall_after: PUBLISHER_STALL,
            },
            hashing: HashSettings {
                workers: count_in("HASH_CONCURRENCY", cpus, MAX_HASH_WORKERS)?,
                queue: count_in("HASH_QUEUE_MAX", 64, MAX_HASH_QUEUE)?,
            },
            request_timeout: Duration::from_secs(30),
            outbox_retention: retention("OUTBOX_RETENTION", "7d")?,
            listen: ListenSettings::from_env()?,
            access: crate::access::Access::from_env()?,
            readiness: crate::routes::health::Readiness::from_env()?,
        })
    }
}

/// Upper bounds that catch a typo (an extra zero or three) before it
/// becomes thousands of threads or a request the receiver must refuse.
const MAX_CONCURRENCY: usize = 4096;
const MAX_BATCH: usize = 10_000;
/// Each hashing thread keeps 12 MiB of argon2 working memory.
const MAX_HASH_WORKERS: usize = 256;
const MAX_HASH_QUEUE: usize = 100_000;

/// A duration written for people (`7d`, `36h`, `90s`), not zero.
fn retention(name: &str, default: &str) -> Result<Duration, ConfigError> {
    let value = env_or(name, default);
    parse_retention(&value).map_err(|reason| ConfigError {
        name: name.to_owned(),
        value,
        reason,
    })
}

/// See [`retention`]. The reason says what a duration looks like rather
/// than where humantime's parser stopped ("expected number at 0").
fn parse_retention(value: &str) -> Result<Duration, String> {
    const LOOKS_LIKE: &str = "write a duration such as 7d, 36h or 90m";
    match humantime::parse_duration(value.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("must be longer than zero; {LOOKS_LIKE}")),
        Err(humantime::DurationError::UnknownUnit { unit, .. }) => Err(format!(
            "`{unit}` is not a unit (d, h, m and s are); {LOOKS_LIKE}"
        )),
        Err(humantime::DurationError::NumberOverflow) => Err(format!("too long; {LOOKS_LIKE}")),
        Err(_) => Err(format!("not a duration; {LOOKS_LIKE}")),
    }
}

/// `AUDIT_URL`: where the HTTP relay sends events. Checked at start, since
/// a URL the client cannot send to would have every event retried for ever.
fn audit_url() -> Result<String, ConfigError> {
    let value = env_or("AUDIT_URL", "http://localhost:8080/");
    parse_audit_url(value.trim()).map_err(|reason| ConfigError {
        name: "AUDIT_URL".to_owned(),
        value: settings::redact::url(&value),
        reason,
    })
}

/// See [`audit_url`]: an absolute `http://` or `https://` URL with a host.
fn parse_audit_url(value: &str) -> Result<String, String> {
    const LOOKS_LIKE: &str = "use an http:// or https:// URL such as http://localhost:8080/";
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(value.to_owned())
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            Err(format!("the URL has no host; {LOOKS_LIKE}"))
        }
        // `localhost:18483` parses as a URL whose scheme is `localhost`.
        Ok(url) => Err(format!(
            "`{}` is not a scheme the relay sends with; {LOOKS_LIKE}",
            url.scheme()
        )),
        Err(e) => Err(format!("not a URL ({e}); {LOOKS_LIKE}")),
    }
}

fn publish_timeout_ms() -> Result<u64, ConfigError> {
    positive("PUBLISH_TIMEOUT_MS", 10_000)
}

/// A count from 1 to `max`: zero would mean a relay with no slot, a batch
/// of nothing or a pool with no thread.
fn count_in(name: &str, default: usize, max: usize) -> Result<usize, ConfigError> {
    let value: usize = env_parse(name, default)?;
    if !(1..=max).contains(&value) {
        return Err(ConfigError {
            name: name.to_owned(),
            value: value.to_string(),
            reason: format!("must be from 1 to {max}"),
        });
    }
    Ok(value)
}

/// A duration in milliseconds that must not be zero: a zero backoff would
/// retry in a hot loop, a zero timeout would fail every publish.
fn positive(name: &str, default: u64) -> Result<u64, ConfigError> {
    match env_parse(name, default)? {
        0 => Err(ConfigError {
            name: name.to_owned(),
            value: "0".to_owned(),
            reason: "must be at least 1 (milliseconds)".to_owned(),
        }),
        ms => Ok(ms),
    }
}

/// `DATABASE_URL`, which the operator commands read too.
pub fn database_url_from_env() -> Result<String, ConfigError> {
    service_kit::config::database_url("sqlite://data/users.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_takes_durations_and_says_what_one_looks_like() {
        assert_eq!(parse_retention("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_retention(" 90m "), Ok(Duration::from_secs(5400)));
        for (bad, says) in [
            ("week", "not a duration"),
            ("7x", "`x` is not a unit"),
            ("0s", "longer than zero"),
            ("", "not a duration"),
        ] {
            let reason = parse_retention(bad).unwrap_err();
            assert!(reason.contains(says), "{bad}: {reason}");
            assert!(reason.contains("such as 7d"), "{bad}: {reason}");
            assert!(!reason.contains(" at "), "{bad}: {reason}");
        }
    }

    #[test]
    fn audit_url_must_be_an_http_url_with_a_host() {
        assert!(parse_audit_url("http://localhost:8080/").is_ok());
        assert!(parse_audit_url("https://audit.example/events").is_ok());
        for bad in [
            "localhost:18483",
            "ftp://x/",
            "http://",
            "http//x",
            "not a url",
        ] {
            let reason = parse_audit_url(bad).unwrap_err();
            assert!(reason.contains("http://"), "{bad}: {reason}");
        }
    }
}
