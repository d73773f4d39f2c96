//! The transports events travel on, named once.

use settings::{env_parse, ConfigError};
use std::str::FromStr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
