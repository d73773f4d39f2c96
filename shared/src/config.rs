//! Reading configuration from the environment, the way both services do it:
//! every setting has a default from DESIGN.md, and a value that is set but
//! wrong stops the service at start with a message naming the variable.

use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// The value of `name`, or `default` when it is unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_owned(),
    }
}

/// `name` parsed as `T`, or `default` when it is unset or empty.
pub fn env_parse<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|e: T::Err| ConfigError {
            name: name.to_owned(),
            value: v,
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// `LISTEN_ADDR`, the same way for both services: `host:port`, where the
/// host is an IP address (`0.0.0.0`, `127.0.0.1`, `[::1]`) or a name
/// (`localhost`), or empty as in Go's `:3000` (every interface). A name is
/// resolved once, at start, to its first IPv4 address if it has one (so
/// `localhost` is `127.0.0.1`, what `curl localhost` tries first), else to
/// its first address. Port 0 picks a free port.
pub fn listen_addr(default: SocketAddr) -> Result<SocketAddr, ConfigError> {
    match std::env::var("LISTEN_ADDR") {
        Ok(v) if !v.trim().is_empty() => {
            parse_listen_addr(v.trim()).map_err(|reason| ConfigError {
                name: "LISTEN_ADDR".to_owned(),
                value: v,
                reason,
            })
        }
        _ => Ok(default),
    }
}

/// See [`listen_addr`].
pub fn parse_listen_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = value.parse::<SocketAddr>() {
        return Ok(address);
    }
    if let Some(port) = value.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let addresses: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| format!("expected host:port, such as 0.0.0.0:3000 or localhost:3000 ({e})"))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{value:?} resolves to no address"))
}

/// `DATABASE_URL`, or `default`: a `sqlite:` or `postgres://` URL. A bare
/// path is refused here, naming the variable, rather than when the store
/// opens it.
pub fn database_url(default: &str) -> Result<String, ConfigError> {
    let url = env_or("DATABASE_URL", default).trim().to_owned();
    match crate::db::Kind::parse(&url) {
        Some(_) => Ok(url),
        None => Err(ConfigError {
            name: "DATABASE_URL".to_owned(),
            value: crate::redact::url(&url),
            reason: format!(
                "use a sqlite:// URL (a file, such as {default}) or a \
                 postgres://user:password@host:port/database URL"
            ),
        }),
    }
}

/// How events travel from the user service to the audit service. Both
/// services read the same variable, `EVENT_TRANSPORT`. This is the one
/// place a transport is named: configuration, stored rows, query output and
/// metric labels all use `as_str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Kafka,
    Nats,
    Mqtt,
}

impl Transport {
    /// Every transport, in the order the docs list them.
    pub const ALL: &[Transport] = &[
        Transport::Http,
        Transport::Kafka,
        Transport::Nats,
        Transport::Mqtt,
    ];

    pub fn from_env() -> Result<Self, ConfigError> {
        env_parse("EVENT_TRANSPORT", Transport::Http)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Kafka => "kafka",
            Transport::Nats => "nats",
            Transport::Mqtt => "mqtt",
        }
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .iter()
            .copied()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<String> = Transport::ALL
                    .iter()
                    .map(|t| format!("`{}`", t.as_str()))
                    .collect();
                format!("expected one of {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
            .field("brokers", &crate::redact::urls(&self.brokers))
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
    /// start (see `shared::kafka::client_config`).
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

    #[test]
    fn listen_addresses_take_ips_names_and_a_bare_port() {
        assert_eq!(
            parse_listen_addr("0.0.0.0:3000"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 3000)))
        );
        assert_eq!(
            parse_listen_addr("localhost:3381"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 3381)))
        );
        assert_eq!(
            parse_listen_addr(":8181"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 8181)))
        );
        assert_eq!(
            parse_listen_addr("[::1]:0"),
            Ok("[::1]:0".parse::<SocketAddr>().unwrap())
        );
        for bad in ["localhost", "3000", "localhost:http-ish", ":x"] {
            assert!(parse_listen_addr(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn transport_names_parse_and_others_are_refused() {
        assert_eq!("HTTP".parse::<Transport>(), Ok(Transport::Http));
        assert_eq!("kafka".parse::<Transport>(), Ok(Transport::Kafka));
        assert_eq!("NATS".parse::<Transport>(), Ok(Transport::Nats));
        assert_eq!("mqtt".parse::<Transport>(), Ok(Transport::Mqtt));
        let err = "carrier-pigeon".parse::<Transport>().unwrap_err();
        assert!(err.contains("`http`") && err.contains("`kafka`"), "{err}");
    }

    #[test]
    fn every_transport_round_trips_through_its_name_and_serde() {
        for t in Transport::ALL {
            assert_eq!(t.as_str().parse::<Transport>(), Ok(*t));
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<Transport>(&json).unwrap(), *t);
        }
    }
}
