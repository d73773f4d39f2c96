//! MQTT the same way in both services: the settings (`MQTT_*`) and the
//! MQTT 5 client options built from them (address, TLS, credentials,
//! client id). What goes in a message is the binding's job
//! (`cloudevents_wire::binding::mqtt`).

use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use settings::ConfigError;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Ping the broker after this long without traffic; a dead connection is
/// noticed within about twice this.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Seconds a TCP connect, TLS handshake and CONNACK may take together.
const CONNECT_TIMEOUT_SECS: u64 = 5;

/// Our own publishes in flight at once, at most (the broker's Receive
/// Maximum may set fewer). rumqttc makes a slot for each possible one with
/// the client; without a limit it made 65,536 of them, some
/// 13 MiB resident per connection: audit-service's consumer and its
/// dead-letter connection took 53 MiB idle, 26 MiB with this. Above the
/// 1,000 publishes the relay's MQTT publisher lets wait.
const OUTGOING_IN_FLIGHT_MAX: u16 = 1024;

/// The user name and password the broker is given (`MQTT_USERNAME`,
/// `MQTT_PASSWORD`). Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for MqttCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MqttCredentials({}, <redacted>)", self.username)
    }
}

/// Why the TLS settings of an `mqtts://` broker cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MqttTlsError {
    #[error("Failed to read MQTT_CA_FILE {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("Failed to set up TLS for MQTT: {0}")]
    Config(#[from] rustls::Error),
}

/// MQTT settings both services read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// `MQTT_URL`, as given: `mqtt://host[:port]` (port 1883), or
    /// `mqtts://host[:port]` for TLS (port 8883).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `MQTT_TOPIC`: where user-service publishes.
    pub topic: String,
    /// `MQTT_CLIENT_ID`; by default the service's name and a random
    /// suffix, since a broker disconnects a client when another connects
    /// with its id (two replicas with one id would take turns).
    pub client_id: String,
    pub credentials: Option<MqttCredentials>,
    /// `MQTT_CA_FILE`: PEM certificates trusted for an `mqtts://` broker
    /// besides the system's roots, for a broker with a private CA.
    pub ca_file: Option<PathBuf>,
}

impl MqttConfig {
    /// The settings of `service` (`user-service`, `audit-service`).
    pub fn from_env(service: &str) -> Result<Self, ConfigError> {
        Self::from_vars(service, std::env::vars())
    }

    pub fn from_vars(
        service: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(name, value)| name.starts_with("MQTT_") && !value.trim().is_empty())
            .collect();
        let get = |name: &str| vars.get(name).map(|v| v.trim().to_owned());
        let url = get("MQTT_URL").unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
        let (host, port, tls) = parse_url(&url).map_err(|reason| ConfigError {
            name: "MQTT_URL".into(),
            value: settings::redact::url(&url),
            reason,
        })?;
        let topic = get("MQTT_TOPIC").unwrap_or_else(|| "audit".into());
        check_topic(&topic).map_err(|reason| ConfigError {
            name: "MQTT_TOPIC".into(),
            value: topic.clone(),
            reason: reason.into(),
        })?;
        let client_id = get("MQTT_CLIENT_ID").unwrap_or_else(|| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{service}-{}", &suffix[..8])
        });
        let credentials = match (get("MQTT_USERNAME"), vars.get("MQTT_PASSWORD")) {
            (Some(username), password) => Some(MqttCredentials {
                username,
                password: password.cloned().unwrap_or_default(),
            }),
            (None, Some(_)) => {
                return Err(ConfigError {
                    name: "MQTT_PASSWORD".into(),
                    value: "(set)".into(),
                    reason: "MQTT_USERNAME must be set with it".into(),
                })
            }
            (None, None) => None,
        };
        let ca_file = get("MQTT_CA_FILE").map(PathBuf::from);
        if ca_file.is_some() && !tls {
            return Err(ConfigError {
                name: "MQTT_CA_FILE".into(),
                value: get("MQTT_CA_FILE").unwrap_or_default(),
                reason: "it is used only with an mqtts:// MQTT_URL".into(),
            });
        }
        Ok(MqttConfig {
            url,
            host,
            port,
            tls,
            topic,
            client_id,
            credentials,
            ca_file,
        })
    }

    /// The MQTT 5 client options: a clean session (the caller changes it
    /// when it wants one kept), the credentials, TLS for `mqtts://`.
    pub fn options(&self) -> Result<MqttOptions, MqttTlsError> {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_start(true)
            .set_connection_timeout(CONNECT_TIMEOUT_SECS)
            .set_outgoing_inflight_upper_limit(OUTGOING_IN_FLIGHT_MAX);
        if let Some(credentials) = &self.credentials {
            options.set_credentials(&credentials.username, &credentials.password);
        }
        if self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                self.tls_config()?,
            )));
        }
        Ok(options)
    }

    /// The system's trusted roots and `MQTT_CA_FILE`'s certificates; ring,
    /// the provider the rest of the workspace uses.
    fn tls_config(&self) -> Result<Arc<ClientConfig>, MqttTlsError> {
        let mut roots = RootCertStore::empty();
        // A certificate the store cannot parse is skipped, as by browsers.
        let (_added, _skipped) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(path) = &self.ca_file {
            let ca_file_error = |reason: String| MqttTlsError::CaFile {
                path: path.clone(),
                reason,
            };
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ca_file_error(e.to_string()))?;
            if certificates.is_empty() {
                return Err(ca_file_error("it holds no PEM certificate".into()));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| ca_file_error(format!("an unusable certificate: {e}")))?;
            }
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Names the broker for logs, without credentials.
    pub fn describe(&self) -> String {
        format!(
            "mqtt {} topic {} client {}",
            self.url, self.topic, self.client_id
        )
    }
}

/// Host, port and TLS of an `mqtt://` or `mqtts://` URL. Credentials do
/// not go in it: a URL ends up in logs, MQTT_PASSWORD does not.
fn parse_url(value: &str) -> Result<(String, u16, bool), String> {
    let url = url::Url::parse(value)
        .map_err(|e| format!("expected mqtt://host:port or mqtts://host:port ({e})"))?;
    let (tls, default_port) = match url.scheme() {
        "mqtt" => (false, 1883),
        "mqtts" => (true, 8883),
        other => {
            return Err(format!(
                "scheme {other:?} is not supported: use mqtt:// or mqtts:// (TLS)"
            ))
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("put credentials in MQTT_USERNAME and MQTT_PASSWORD, not in the URL".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err("an MQTT URL has no path or query: mqtt://host:port".into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL names no host")?;
    // `[::1]` is how a URL writes an IPv6 address; a socket address wants
    // it bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), url.port().unwrap_or(default_port), tls))
}

/// A topic to publish to: not empty, no wildcards, no U+0000, not a
/// broker's own `$` topic (MQTT 5.0, 4.7).
fn check_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic.len() > usize::from(u16::MAX) {
        Err("a topic is 1 to 65,535 bytes")
    } else if topic.contains(['+', '#']) {
        Err("a topic to publish to has no wildcards (+, #)")
    } else if topic.contains('\0') {
        Err("a topic holds no U+0000")
    } else if topic.starts_with('$') {
        Err("topics starting with $ belong to the broker")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<MqttConfig, ConfigError> {
        MqttConfig::from_vars(
            "user-service",
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn the_defaults_are_the_local_broker_and_the_audit_topic() {
        let config = config(&[]).unwrap();
        assert_eq!(
            (config.host.as_str(), config.port, config.tls),
            ("127.0.0.1", 1883, false)
        );
        assert_eq!(config.topic, "audit");
        assert!(config.client_id.starts_with("user-service-"));
        assert_ne!(
            config.client_id,
            self::config(&[]).unwrap().client_id,
            "two replicas get two ids"
        );
        assert_eq!(config.credentials, None);
    }

    #[test]
    fn mqtts_means_tls_on_8883_unless_a_port_is_given() {
        let config = config(&[("MQTT_URL", "mqtts://broker.example")]).unwrap();
        assert_eq!((config.port, config.tls), (8883, true));
        let config = config_at("mqtt://[::1]:2883");
        assert_eq!((config.host.as_str(), config.port), ("::1", 2883));
    }

    #[test]
    fn the_client_keeps_slots_for_a_bounded_number_of_its_own_publishes() {
        let options = config(&[]).unwrap().options().unwrap();
        assert_eq!(
            options.get_outgoing_inflight_upper_limit(),
            Some(OUTGOING_IN_FLIGHT_MAX)
        );
    }

    fn config_at(url: &str) -> MqttConfig {
        config(&[("MQTT_URL", url)]).unwrap()
    }

    #[test]
    fn bad_urls_topics_and_credentials_name_the_variable() {
        for (name, value) in [
            ("MQTT_URL", "http://broker:1883"),
            ("MQTT_URL", "mqtt://user:secret@broker:1883"),
            ("MQTT_URL", "mqtt://broker:1883/path"),
            ("MQTT_URL", "not a url"),
            ("MQTT_TOPIC", "audit/#"),
            ("MQTT_TOPIC", "a/+/b"),
            ("MQTT_TOPIC", "$SYS/x"),
            ("MQTT_PASSWORD", "secret"),
            ("MQTT_CA_FILE", "/ca.pem"),
        ] {
            let error = config(&[(name, value)]).unwrap_err();
            assert_eq!(error.name, name, "{value}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }

    #[test]
    fn credentials_are_read_and_never_printed() {
        let config = config(&[("MQTT_USERNAME", "svc"), ("MQTT_PASSWORD", "s3cret")]).unwrap();
        let credentials = config.credentials.clone().unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("svc", "s3cret")
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!config.describe().contains("s3cret"));
    }

    #[test]
    fn options_carry_the_address_client_id_and_credentials() {
        let config = config(&[
            ("MQTT_URL", "mqtts://localhost:18883"),
            ("MQTT_CLIENT_ID", "fixed"),
            ("MQTT_USERNAME", "svc"),
            ("MQTT_PASSWORD", "pw"),
        ])
        .unwrap();
        let options = config.options().unwrap();
        assert_eq!(options.broker_address(), ("localhost".to_owned(), 18883));
        assert_eq!(options.client_id(), "fixed");
        assert!(options.clean_start());
        assert!(matches!(options.transport(), Transport::Tls(_)));
    }

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem").unwrap();
        let config = config(&[
            ("MQTT_URL", "mqtts://localhost"),
            ("MQTT_CA_FILE", path.to_str().unwrap()),
        ])
        .unwrap();
        let error = config.options().unwrap_err();
        assert!(matches!(error, MqttTlsError::CaFile { .. }), "{error}");
    }
}
