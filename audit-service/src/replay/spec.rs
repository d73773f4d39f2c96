//! What a replay is asked to do (`POST /v1/replays`'s body), checked once
//! when it is created: a selection (a CESQL filter and a seq or time
//! range), one target, how to lay events out, a rate, and what becomes of
//! erased events. Past [`ReplayRequest::check`] the engine holds only a
//! valid [`Spec`]; the spec is stored as JSON with the replay, so a replay
//! resumed on another replica sends the same way.

use crate::filter::CesqlFilter;
use brokers::kafka::KafkaConfig;
use brokers::mqtt::MqttConfig;
use brokers::nats::NatsConfig;
use chrono::{DateTime, Utc};
use publishers::{ContentMode, HttpClientSettings, MqttSettings, PublishSettings};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// The highest rate a replay may ask for, in events a second: far above
/// what one target takes, it catches a typo rather than limit anyone.
pub const MAX_RATE: u32 = 1_000_000;

/// How long one publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /v1/replays`: which stored events go where. Unknown members are
/// refused, so a misspelt option is not silently ignored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with the replay's `target` and selection"
)]
pub struct ReplayRequest {
    /// Only events matching this CESQL v1 expression (at most 4096 bytes);
    /// none or empty: every event in the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The first seq to replay (inclusive); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub from_seq: Option<i64>,
    /// The last seq to replay (inclusive); default the newest stored when
    /// the replay is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub to_seq: Option<i64>,
    /// Events received at or after this instant (RFC 3339); with `to_time`,
    /// instead of a seq range. Resolved to a seq range when the replay is
    /// created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time: Option<DateTime<Utc>>,
    /// Events received before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time: Option<DateTime<Utc>>,
    /// Where the events go; a dry run needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Events a second at most; none: as fast as the target takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate: Option<u32>,
    /// Only count what would be sent; nothing is sent.
    #[serde(default)]
    pub dry_run: bool,
    /// Add the `replayid` extension (the replay's id) to every event sent.
    /// Off by default: events go out exactly as stored.
    #[serde(default)]
    pub replayid: bool,
    /// What becomes of an event whose data was erased.
    #[serde(default)]
    pub erased: Erased,
}

/// Where a replay sends. Broker targets connect with the service's own
/// broker settings (`KAFKA_*`, `NATS_*`, `MQTT_*`: credentials, TLS), to
/// the topic or subject named here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// An HTTP endpoint, as user-service's relay sends: 2xx is delivered,
    /// 404, 408, 409, 429 and 5xx are retried (honouring `Retry-After`),
    /// any other 4xx is a dead letter.
    Http {
        /// An `http://` or `https://` URL.
        url: String,
        /// `binary` (the default), `structured` or `batch`.
        #[serde(default)]
        mode: HttpMode,
        /// Events per request in batch mode, 1 to 1000 (default 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(minimum = 1, maximum = 1000)]
        batch_size: Option<usize>,
    },
    /// A Kafka topic, binary mode, keyed as user-service keys.
    Kafka {
        topic: String,
        /// Bootstrap servers; default `KAFKA_BROKERS`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        brokers: Option<String>,
    },
    /// A NATS JetStream subject, in a stream created if missing.
    Nats {
        subject: String,
        /// The stream that holds the subject.
        stream: String,
        /// Servers; default `NATS_URL`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// `binary` (the default) or `structured`.
        #[serde(default)]
        mode: BrokerMode,
    },
    /// An MQTT 5 topic, QoS 1.
    Mqtt {
        topic: String,
        /// The broker; default `MQTT_URL`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// `binary` (the default) or `structured`.
        #[serde(default)]
        mode: BrokerMode,
    },
}

/// How events travel over HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    #[default]
    Binary,
    Structured,
    /// `application/cloudevents-batch+json`, `batch_size` events a request.
    Batch,
}

/// How events travel over NATS and MQTT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    #[default]
    Binary,
    Structured,
}

/// What a replay does with an event whose data was erased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Erased {
    /// Sent as stored: its attributes, without data (the default).
    #[default]
    Send,
    /// Not sent, counted as skipped.
    Skip,
}

/// A checked request: what the engine runs.
#[derive(Debug, Clone)]
pub struct Spec {
    pub request: ReplayRequest,
    pub filter: Option<CesqlFilter>,
}

/// The default and largest batch of events in one HTTP request.
const DEFAULT_BATCH: usize = 100;
const MAX_BATCH: usize = 1000;

impl ReplayRequest {
    /// The request checked: a 400's reason when it cannot run.
    pub fn check(self) -> Result<Spec, SpecError> {
        let filter = match self.filter.as_deref().filter(|f| !f.is_empty()) {
            None => None,
            Some(text) => Some(CesqlFilter::parse(text).map_err(SpecError::Filter)?),
        };
        let seqs = self.from_seq.is_some() || self.to_seq.is_some();
        let times = self.from_time.is_some() || self.to_time.is_some();
        if seqs && times {
            return Err(SpecError::Invalid(
                "give a seq range (`from_seq`, `to_seq`) or a time range (`from_time`, \
                 `to_time`), not both"
                    .into(),
            ));
        }
        for (name, seq) in [("from_seq", self.from_seq), ("to_seq", self.to_seq)] {
            if seq.is_some_and(|s| s < 1) {
                return Err(SpecError::Invalid(format!("`{name}` must be at least 1")));
            }
        }
        if let (Some(from), Some(to)) = (self.from_seq, self.to_seq) {
            if from > to {
                return Err(SpecError::Invalid(format!(
                    "`from_seq` ({from}) is after `to_seq` ({to})"
                )));
            }
        }
        if let (Some(from), Some(to)) = (self.from_time, self.to_time) {
            if from >= to {
                return Err(SpecError::Invalid(
                    "`from_time` must be before `to_time`".into(),
                ));
            }
        }
        if let Some(rate) = self.rate {
            if !(1..=MAX_RATE).contains(&rate) {
                return Err(SpecError::Invalid(format!(
                    "`rate` must be from 1 to {MAX_RATE} events a second"
                )));
            }
        }
        match &self.target {
            Some(target) => target.check()?,
            None if self.dry_run => {}
            None => {
                return Err(SpecError::Invalid(
                    "a replay needs a `target` (only a dry run goes without)".into(),
                ))
            }
        }
        Ok(Spec {
            request: self,
            filter,
        })
    }
}

impl Target {
    fn check(&self) -> Result<(), SpecError> {
        let named = |what: &str, value: &str| {
            if value.trim().is_empty() {
                Err(SpecError::Invalid(format!(
                    "`target.{what}` must not be empty"
                )))
            } else {
                Ok(())
            }
        };
        match self {
            Target::Http {
                url, batch_size, ..
            } => {
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    _ => {
                        return Err(SpecError::Invalid(format!(
                            "`target.url` must be an http:// or https:// URL with a host, got {:?}",
                            settings::redact::url(url)
                        )))
                    }
                }
                if batch_size.is_some_and(|n| !(1..=MAX_BATCH).contains(&n)) {
                    return Err(SpecError::Invalid(format!(
                        "`target.batch_size` must be from 1 to {MAX_BATCH}"
                    )));
                }
                Ok(())
            }
            Target::Kafka { topic, .. } => named("topic", topic),
            Target::Nats {
                subject, stream, ..
            } => {
                named("subject", subject)?;
                named("stream", stream)
            }
            Target::Mqtt { topic, .. } => named("topic", topic),
        }
    }

    /// Events per HTTP request: 1 unless in batch mode.
    pub fn batch_size(&self) -> usize {
        match self {
            Target::Http {
                mode: HttpMode::Batch,
                batch_size,
                ..
            } => batch_size.unwrap_or(DEFAULT_BATCH),
            _ => 1,
        }
    }

    /// The publisher's settings: the service's broker settings from the
    /// environment, with the target's topic, subject or servers.
    pub fn publish_settings(&self, replay_id: &str) -> anyhow::Result<PublishSettings> {
        let env = |overrides: &[(&str, Option<&str>)]| {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            for (name, value) in overrides {
                if let Some(value) = value {
                    vars.push(((*name).to_owned(), (*value).to_owned()));
                }
            }
            vars
        };
        Ok(match self {
            Target::Http { url, mode, .. } => PublishSettings::Http {
                url: url.clone(),
                mode: match mode {
                    HttpMode::Structured => ContentMode::Structured,
                    HttpMode::Binary | HttpMode::Batch => ContentMode::Binary,
                },
                timeout: PUBLISH_TIMEOUT,
                client: HttpClientSettings::default(),
            },
            Target::Kafka { topic, brokers } => PublishSettings::Kafka {
                config: KafkaConfig::from_vars(env(&[
                    ("KAFKA_BROKERS", brokers.as_deref()),
                    ("KAFKA_TOPIC", Some(topic)),
                ])),
                timeout: PUBLISH_TIMEOUT,
            },
            Target::Nats {
                subject,
                stream,
                url,
                mode,
            } => PublishSettings::Nats {
                config: NatsConfig::from_vars(env(&[
                    ("NATS_URL", url.as_deref()),
                    ("NATS_SUBJECT", Some(subject)),
                    ("NATS_STREAM", Some(stream)),
                ]))?,
                mode: mode.content_mode(),
                timeout: PUBLISH_TIMEOUT,
            },
            Target::Mqtt { topic, url, mode } => {
                // A client id of its own: a broker disconnects a client
                // when another connects with its id.
                let client_id = format!("audit-service-replay-{replay_id}");
                PublishSettings::Mqtt(MqttSettings {
                    config: MqttConfig::from_vars(
                        "audit-service",
                        env(&[
                            ("MQTT_URL", url.as_deref()),
                            ("MQTT_TOPIC", Some(topic)),
                            ("MQTT_CLIENT_ID", Some(&client_id)),
                        ]),
                    )?,
                    mode: mode.content_mode(),
                    timeout: PUBLISH_TIMEOUT,
                })
            }
        })
    }

    /// A word for the listing: `kafka topic audit-copy`.
    pub fn describe(&self) -> String {
        match self {
            Target::Http { url, mode, .. } => {
                format!("http {} ({mode:?})", settings::redact::url(url)).to_lowercase()
            }
            Target::Kafka { topic, .. } => format!("kafka topic {topic}"),
            Target::Nats { subject, .. } => format!("nats subject {subject}"),
            Target::Mqtt { topic, .. } => format!("mqtt topic {topic}"),
        }
    }
}

impl BrokerMode {
    fn content_mode(self) -> ContentMode {
        match self {
            BrokerMode::Binary => ContentMode::Binary,
            BrokerMode::Structured => ContentMode::Structured,
        }
    }
}

/// Why a replay request cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Filter(crate::filter::FilterError),
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<Spec, String> {
        let request: ReplayRequest = serde_json::from_value(json).map_err(|e| e.to_string())?;
        request.check().map_err(|e| e.to_string())
    }

    #[test]
    fn a_request_names_a_target_and_may_narrow_the_selection() {
        let spec = request(serde_json::json!({
            "filter": "type = 'user.storeUser'",
            "from_seq": 5, "to_seq": 10,
            "target": {"kind": "http", "url": "http://127.0.0.1:9/", "mode": "batch"},
            "rate": 100
        }))
        .unwrap();
        assert!(spec.filter.is_some());
        assert_eq!(spec.request.target.unwrap().batch_size(), DEFAULT_BATCH);
        let spec = request(serde_json::json!({"target": {"kind": "kafka", "topic": "t"}})).unwrap();
        assert!(spec.filter.is_none());
        assert_eq!(spec.request.erased, Erased::Send);
        assert_eq!(spec.request.target.unwrap().batch_size(), 1);
        assert!(request(serde_json::json!({"dry_run": true})).is_ok());
    }

    #[test]
    fn bad_requests_are_refused_with_what_is_wrong() {
        for (json, says) in [
            (
                serde_json::json!({"target": {"kind": "http", "url": "ftp://x/"}}),
                "http://",
            ),
            (
                serde_json::json!({"from_seq": 9, "to_seq": 2, "target": {"kind": "kafka", "topic": "t"}}),
                "after",
            ),
            (
                serde_json::json!({"from_seq": 1, "from_time": "2026-01-01T00:00:00Z", "target": {"kind": "kafka", "topic": "t"}}),
                "not both",
            ),
            (
                serde_json::json!({"rate": 0, "target": {"kind": "kafka", "topic": "t"}}),
                "`rate`",
            ),
            (
                serde_json::json!({"filter": "type = ", "target": {"kind": "kafka", "topic": "t"}}),
                "CESQL",
            ),
            (
                serde_json::json!({"target": {"kind": "kafka", "topic": " "}}),
                "target.topic",
            ),
            (
                serde_json::json!({"target": {"kind": "smtp"}}),
                "unknown variant",
            ),
            (serde_json::json!({"rate": 5}), "needs a `target`"),
            (
                serde_json::json!({"fliter": "x", "target": {"kind": "kafka", "topic": "t"}}),
                "unknown field",
            ),
        ] {
            let error = request(json.clone()).unwrap_err();
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
