//! The Kafka settings both services read: `KAFKA_BROKERS`, `KAFKA_TOPIC`,
//! and every other `KAFKA_<PROPERTY>` variable as a librdkafka property.

use settings::redact;

/// Kafka settings both services read. Its `Debug` shows property names,
/// not values: `sasl.password` is one of them.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`, librdkafka's `bootstrap.servers`.
    pub brokers: String,
    /// `KAFKA_TOPIC`, where user events go.
    pub topic: String,
    /// Every other `KAFKA_<PROPERTY>` variable as a librdkafka property
    /// (`KAFKA_SECURITY_PROTOCOL=SSL` -> `security.protocol=SSL`), so TLS
    /// and SASL need no code change.
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &redact::urls(&self.brokers))
            .field("topic", &self.topic)
            .field("properties", &names)
            .finish()
    }
}

/// Variables with a meaning of their own, not passed to librdkafka.
const KAFKA_APP_SETTINGS: &[&str] = &["BROKERS", "TOPIC", "GROUP_ID", "DLQ_TOPIC"];

/// Kubernetes injects service-link variables for a Service named `kafka`:
/// `KAFKA_PORT=tcp://10.0.0.1:9092`, `KAFKA_SERVICE_HOST`,
/// `KAFKA_PORT_9092_TCP_ADDR` and so on. None of them is a librdkafka
/// property, and passing them on would stop both services at start.
fn is_kubernetes_service_link(setting: &str) -> bool {
    setting == "PORT" || setting.starts_with("PORT_") || setting.starts_with("SERVICE_")
}

impl KafkaConfig {
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// The rule for `KAFKA_*` variables: `BROKERS`, `TOPIC`, `GROUP_ID` and
    /// `DLQ_TOPIC` are the services' own settings; Kubernetes service-link
    /// variables are ignored with a warning; every other one is a librdkafka
    /// property, and a name librdkafka does not know stops the service at
    /// start (see `crate::kafka::client_config`).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut brokers = "127.0.0.1:9092".to_owned();
        let mut topic = "audit".to_owned();
        let mut properties = Vec::new();
        for (name, value) in vars {
            let Some(setting) = name.strip_prefix("KAFKA_") else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            match setting {
                "BROKERS" => brokers = value,
                "TOPIC" => topic = value,
                s if KAFKA_APP_SETTINGS.contains(&s) => {}
                s if is_kubernetes_service_link(s) => {
                    tracing::warn!(
                        variable = %name,
                        "ignoring a Kubernetes service-link variable; it is not a librdkafka property"
                    );
                }
                s => properties.push((s.to_ascii_lowercase().replace('_', "."), value)),
            }
        }
        properties.sort();
        KafkaConfig {
            brokers,
            topic,
            properties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafka_defaults_are_the_seeds() {
        let c = KafkaConfig::from_vars(vars(&[]));
        assert_eq!(c.brokers, "127.0.0.1:9092");
        assert_eq!(c.topic, "audit");
        assert!(c.properties.is_empty());
    }

    #[test]
    fn kafka_variables_become_librdkafka_properties() {
        let c = KafkaConfig::from_vars(vars(&[
            ("KAFKA_BROKERS", "b:9093"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_GROUP_ID", "g"),
            ("HOME", "/root"),
        ]));
        assert_eq!(c.brokers, "b:9093");
        assert_eq!(
            c.properties,
            vec![
                ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
                ("security.protocol".into(), "SASL_SSL".into()),
            ]
        );
    }

    #[test]
    fn kubernetes_service_link_variables_are_not_properties() {
        let c = KafkaConfig::from_vars(vars(&[
            ("KAFKA_PORT", "tcp://10.0.0.1:9092"),
            ("KAFKA_PORT_9092_TCP", "tcp://10.0.0.1:9092"),
            ("KAFKA_PORT_9092_TCP_ADDR", "10.0.0.1"),
            ("KAFKA_SERVICE_HOST", "10.0.0.1"),
            ("KAFKA_SERVICE_PORT", "9092"),
            ("KAFKA_SERVICE_PORT_BROKER", "9092"),
            ("KAFKA_SOCKET_TIMEOUT_MS", "5000"),
        ]));
        assert_eq!(
            c.properties,
            vec![("socket.timeout.ms".into(), "5000".into())]
        );
    }

    #[test]
    fn debug_output_names_properties_without_their_values() {
        let c = KafkaConfig::from_vars(vars(&[
            ("KAFKA_BROKERS", "user:s3cret@b:9093"),
            ("KAFKA_SASL_PASSWORD", "s3cret"),
        ]));
        let shown = format!("{c:?}");
        assert!(shown.contains("sasl.password"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
