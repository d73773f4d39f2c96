//! Building Kafka clients the same way in both services, and the readiness
//! probe both `/readyz` endpoints use.
//!
//! The rule for operator settings (`KAFKA_<PROPERTY>`, see
//! [`KafkaConfig`]): the service's defaults are set first and the
//! operator's properties after them, so the operator wins, except for the
//! few properties a delivery guarantee rests on (`guarantees` below: the
//! consumer's manual offset commits, the producer's idempotence and
//! `acks=all`). Setting one of those to another value stops the service at
//! start with a message naming the variable, rather than being silently
//! overridden or silently weakening the guarantee.

mod config;

pub use config::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// The context of a Kafka client that has no other job: librdkafka's log
/// lines and error reports, as rdkafka's default context logs them, with
/// credentials masked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Redacting;

impl rdkafka::ClientContext for Redacting {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Redacting {}

/// A librdkafka log line, at the level rdkafka's default context gives it,
/// with every URL-like word through `redact::in_text`.
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let message = settings::redact::in_text(message);
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
    }
}

/// A librdkafka error report, as rdkafka's default context logs it, masked.
pub fn report(error: &KafkaError, reason: &str) {
    let reason = settings::redact::in_text(reason);
    tracing::error!("librdkafka: {error}: {reason}");
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error(
        "environment variable {variable}={value:?} conflicts with the service's delivery \
         guarantee: {property} must be {required:?} ({why})"
    )]
    Conflict {
        variable: String,
        value: String,
        property: &'static str,
        required: &'static str,
        why: &'static str,
    },
    /// librdkafka refused a property or its value. The message is
    /// librdkafka's with the value masked: a misspelt `KAFKA_SASL_PASWORD`
    /// would otherwise print the password.
    #[error("Kafka client configuration refused: {0} (check the KAFKA_* environment variables)")]
    Invalid(String),
}

impl From<rdkafka::error::KafkaError> for KafkaConfigError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        use rdkafka::error::KafkaError;
        match error {
            KafkaError::ClientConfig(_, description, property, value) => {
                let description = if value.is_empty() {
                    description
                } else {
                    description.replace(&value, "***")
                };
                KafkaConfigError::Invalid(format!("{description} (property {property})"))
            }
            other => KafkaConfigError::Invalid(other.to_string()),
        }
    }
}

/// A property a guarantee depends on: its required value, other spellings of
/// that value librdkafka treats the same, and why.
pub struct Guarantee {
    pub property: &'static str,
    pub value: &'static str,
    pub same: &'static [&'static str],
    pub why: &'static str,
}

/// `bootstrap.servers`, then `defaults`, then the operator's properties,
/// then the `guarantees` (refusing an operator value that contradicts one).
pub fn client_config(
    config: &KafkaConfig,
    defaults: &[(&str, &str)],
    guarantees: &[Guarantee],
) -> Result<ClientConfig, KafkaConfigError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in defaults {
        client.set(*key, *value);
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    for guarantee in guarantees {
        if let Some((_, value)) = config
            .properties
            .iter()
            .find(|(key, _)| key == guarantee.property)
        {
            let agrees = value.eq_ignore_ascii_case(guarantee.value)
                || guarantee.same.iter().any(|s| value.eq_ignore_ascii_case(s));
            if !agrees {
                return Err(KafkaConfigError::Conflict {
                    variable: format!(
                        "KAFKA_{}",
                        guarantee.property.replace('.', "_").to_ascii_uppercase()
                    ),
                    value: value.clone(),
                    property: guarantee.property,
                    required: guarantee.value,
                    why: guarantee.why,
                });
            }
        }
        client.set(guarantee.property, guarantee.value);
    }
    Ok(client)
}

/// Creates `topics` when they do not exist, with the broker's default
/// partition count and replication factor, and says what came of it in the
/// log. Never fails: a broker that refuses (no permission, a policy) or
/// does not answer within `timeout` leaves a consumer to wait for the topic,
/// which is normal on a fresh cluster, not an error.
pub async fn create_topics(config: &KafkaConfig, topics: &[&str], timeout: Duration) {
    let admin: AdminClient<Redacting> =
        match client_config(config, &[], &[]).and_then(|c| Ok(c.create_with_context(Redacting)?)) {
            Ok(admin) => admin,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create Kafka topics: no admin client");
                return;
            }
        };
    // -1: the broker's own defaults (num.partitions, default.replication.factor).
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|name| NewTopic::new(name, -1, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    match admin.create_topics(&new, &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(%topic, "created Kafka topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => tracing::info!(
                        %topic,
                        reason = %code,
                        "cannot create Kafka topic; waiting for it to be created"
                    ),
                }
            }
        }
        Err(e) => tracing::info!(
            error = %e,
            "cannot create Kafka topics now; waiting for them to exist"
        ),
    }
}

/// Answers whether the brokers respond and know the topic, for `/readyz`.
#[derive(Clone)]
pub struct BrokerProbe {
    client: Arc<BaseConsumer<ProbeContext>>,
    topic: String,
}

/// Keeps librdkafka's last error report. A failed metadata fetch only says
/// "broker transport failure"; the report says why (`SASL authentication
/// error: ... invalid credentials`, a TLS handshake failure, a refused
/// connection), which is what an operator reading `/readyz` needs. Reports
/// reach `error` only when the client is polled, which `check` does.
#[derive(Default)]
struct ProbeContext {
    last_error: std::sync::Mutex<Option<String>>,
}

impl ProbeContext {
    fn keep(&self, reason: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(settings::redact::in_text(reason));
        }
    }
}

impl rdkafka::ClientContext for ProbeContext {
    /// Kept, not logged: the consumer logs the same report, and `/readyz`
    /// polls would repeat it.
    fn error(&self, _error: rdkafka::error::KafkaError, reason: &str) {
        self.keep(reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}

impl BrokerProbe {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaConfigError> {
        let client =
            client_config(config, &[], &[])?.create_with_context(ProbeContext::default())?;
        Ok(BrokerProbe {
            client: Arc::new(client),
            topic: config.topic.clone(),
        })
    }

    /// Fetches the topic's metadata within `timeout`; the error says why
    /// not, with librdkafka's last report of what went wrong.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let client = self.client.clone();
        let topic = self.topic.clone();
        // fetch_metadata blocks its thread until the broker answers.
        let fetched = tokio::task::spawn_blocking(move || {
            let fetched = client.fetch_metadata(Some(&topic), timeout).map(|_| ());
            if fetched.is_err() {
                // The client is never subscribed, so a poll only serves the
                // error events queued for it, which reach `error` above.
                for _ in 0..16 {
                    let _ = client.poll(Duration::ZERO);
                }
            }
            let last_error = client
                .context()
                .last_error
                .lock()
                .ok()
                .and_then(|mut last| {
                    // A success clears the report: it is about the past now.
                    if fetched.is_ok() {
                        *last = None;
                    }
                    last.clone()
                });
            (fetched, last_error)
        })
        .await
        .map_err(|e| format!("the Kafka readiness check failed: {e}"))?;
        match fetched {
            (Ok(()), _) => Ok(()),
            (Err(e), None) => Err(format!("Kafka brokers unreachable: {e}")),
            (Err(e), Some(reason)) => Err(format!("Kafka brokers unreachable: {e}; {reason}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "audit".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const ACKS: Guarantee = Guarantee {
        property: "acks",
        value: "all",
        same: &["-1"],
        why: "a record counts as delivered only once every in-sync replica has it",
    };

    #[test]
    fn the_operator_wins_over_defaults() {
        let c = client_config(&config(&[("linger.ms", "7")]), &[("linger.ms", "0")], &[]).unwrap();
        assert_eq!(c.get("linger.ms"), Some("7"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }

    #[test]
    fn a_setting_that_breaks_a_guarantee_is_refused_by_name() {
        let err = client_config(&config(&[("acks", "1")]), &[], &[ACKS]).unwrap_err();
        assert!(err.to_string().contains("KAFKA_ACKS=\"1\""), "{err}");
        let agreeing = client_config(&config(&[("acks", "-1")]), &[], &[ACKS]).unwrap();
        assert_eq!(agreeing.get("acks"), Some("all"));
    }

    #[test]
    fn an_unknown_property_is_refused_when_the_client_is_made() {
        let err = BrokerProbe::new(&config(&[("no.such.property", "1")]))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("no.such.property"), "{err}");
    }

    #[test]
    fn a_refused_value_is_not_quoted() {
        for (property, value) in [("sasl.paswo", "hunter2-secret"), ("acks", "hunter2-secret")] {
            let err = BrokerProbe::new(&config(&[(property, value)]))
                .err()
                .expect("refused");
            let text = err.to_string();
            assert!(text.contains(property), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
