//! NATS JetStream the same way in both services: the settings (`NATS_*`),
//! connecting with the operator's credentials, the stream both services
//! create if it is missing, and the readiness probe of both `/readyz`.
//!
//! The stream. user-service publishes to `NATS_SUBJECT` (`audit.events`),
//! and the stream `NATS_STREAM` (`AUDIT`) captures `audit.>`: the first
//! token of the subject and everything under it, so other producers (the
//! Go SDK in the interop suite, another service) can publish to
//! `audit.<anything>` and the one durable consumer reads them all. Either
//! service creates the stream when it is missing, so events wait in
//! JetStream whichever starts first; an existing stream is used as the
//! operator made it, never changed. Created here, it is file-backed (an
//! acknowledged publish is on disk), keeps messages 7 days (Kafka's default
//! retention: the audit service may be down for a while, the stream must
//! not grow forever) and deduplicates by `Nats-Msg-Id` within 2 minutes
//! (the server's default window: a relay restarted after a crash re-sends
//! what it had in flight well within it; a later duplicate is still stored
//! once by the audit store's UNIQUE(source, id)).

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use settings::ConfigError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How the services authenticate to the server; at most one of them.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    /// `NATS_CREDS`: a `.creds` file (a JWT and an nkey seed).
    Creds(PathBuf),
    /// `NATS_TOKEN`.
    Token(String),
    /// `NATS_USER` and `NATS_PASSWORD`.
    UserPassword {
        user: String,
        password: String,
    },
}

/// Never prints a token or a password.
impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::Creds(path) => write!(f, "Creds({})", path.display()),
            NatsAuth::Token(_) => f.write_str("Token(<redacted>)"),
            NatsAuth::UserPassword { user, .. } => {
                write!(f, "UserPassword({user}, <redacted>)")
            }
        }
    }
}

/// NATS settings both services read. Its `Debug` shows `url` through
/// `redact::urls`: a NATS URL can carry a token or a password.
#[derive(Clone)]
pub struct NatsConfig {
    /// `NATS_URL`: one server or a comma-separated list.
    pub url: String,
    /// `NATS_STREAM`: the JetStream stream of user events.
    pub stream: String,
    /// `NATS_SUBJECT`: where user-service publishes.
    pub subject: String,
    pub auth: NatsAuth,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &settings::redact::urls(&self.url))
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("auth", &self.auth)
            .finish()
    }
}

/// The defaults: a server on loopback, the `AUDIT` stream, no credentials.
impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "AUDIT".into(),
            subject: "audit.events".into(),
            auth: NatsAuth::None,
        }
    }
}

impl NatsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: std::collections::HashMap<String, String> = vars
            .into_iter()
            .filter(|(name, value)| name.starts_with("NATS_") && !value.trim().is_empty())
            .collect();
        let get = |name: &str, default: &str| {
            vars.get(name)
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| default.to_owned())
        };
        let defaults = NatsConfig::default();
        let config = NatsConfig {
            url: get("NATS_URL", &defaults.url),
            stream: get("NATS_STREAM", &defaults.stream),
            subject: get("NATS_SUBJECT", &defaults.subject),
            auth: auth_from(&vars)?,
        };
        check_stream_name("NATS_STREAM", &config.stream)?;
        check_subject("NATS_SUBJECT", &config.subject)?;
        Ok(config)
    }

    /// What the stream captures when the services create it: the first
    /// token of `NATS_SUBJECT` and everything under it.
    pub fn stream_subjects(&self) -> Vec<String> {
        let first = self.subject.split('.').next().unwrap_or_default();
        vec![format!("{first}.>")]
    }

    /// The stream as the services create it (see the module header).
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: self.stream_subjects(),
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }
    }

    /// Connects in the background: the call returns at once and the client
    /// (re)connects by itself, so a service starts while the server is
    /// away and `/readyz` says so. `name` shows in the server's monitoring.
    pub async fn connect(
        &self,
        name: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            // Reconnect for ever, from 0 up to 4 s apart (the default backs
            // off further, to minutes, which tests and operators would wait
            // out after a short outage).
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 250).min(4000))
            });
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::Creds(path) => options.credentials_file(path).await.map_err(|e| {
                async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, e)
            })?,
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
        };
        options.connect(self.url.as_str()).await
    }

    /// Names the server for logs, without credentials (the URLs through
    /// `redact::urls`: a token or password in `NATS_URL` stays out).
    pub fn describe(&self) -> String {
        format!(
            "nats {} stream {} subject {}",
            settings::redact::urls(&self.url),
            self.stream,
            self.subject
        )
    }
}

fn auth_from(vars: &std::collections::HashMap<String, String>) -> Result<NatsAuth, ConfigError> {
    let creds = vars.get("NATS_CREDS");
    let token = vars.get("NATS_TOKEN");
    let user = vars.get("NATS_USER");
    let password = vars.get("NATS_PASSWORD");
    let given = [
        creds.is_some(),
        token.is_some(),
        user.is_some() || password.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError {
            name: "NATS_CREDS/NATS_TOKEN/NATS_USER".into(),
            value: "(several set)".into(),
            reason: "set one way of authenticating: a creds file, a token, or a user and password"
                .into(),
        });
    }
    Ok(match (creds, token, user, password) {
        (Some(path), ..) => NatsAuth::Creds(PathBuf::from(path)),
        (_, Some(token), ..) => NatsAuth::Token(token.clone()),
        (_, _, Some(user), Some(password)) => NatsAuth::UserPassword {
            user: user.clone(),
            password: password.clone(),
        },
        (_, _, Some(_), None) => {
            return Err(ConfigError {
                name: "NATS_PASSWORD".into(),
                value: String::new(),
                reason: "NATS_USER is set, so NATS_PASSWORD must be too".into(),
            })
        }
        (_, _, None, Some(_)) => {
            return Err(ConfigError {
                name: "NATS_USER".into(),
                value: String::new(),
                reason: "NATS_PASSWORD is set, so NATS_USER must be too".into(),
            })
        }
        _ => NatsAuth::None,
    })
}

/// Stream and consumer names: the server refuses spaces, `.`, `*`, `>`
/// and path separators in them.
pub fn check_stream_name(variable: &str, name: &str) -> Result<(), ConfigError> {
    let bad = name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c));
    if bad {
        return Err(ConfigError {
            name: variable.into(),
            value: name.into(),
            reason:
                "a JetStream name must be non-empty, without spaces, '.', '*', '>', '/' or '\\'"
                    .into(),
        });
    }
    Ok(())
}

/// A subject to publish to: dot-separated non-empty tokens, no wildcards,
/// no spaces.
pub fn check_subject(variable: &str, subject: &str) -> Result<(), ConfigError> {
    let bad = subject.split('.').any(|token| {
        token.is_empty()
            || token == "*"
            || token == ">"
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if bad {
        return Err(ConfigError {
            name: variable.into(),
            value: subject.into(),
            reason: "a NATS subject to publish to: dot-separated tokens, no wildcards or spaces"
                .into(),
        });
    }
    Ok(())
}

/// Creates the stream `config` describes unless one of that name exists.
/// The error says why it could not be had.
pub async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), String> {
    let name = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map(|_| ())
        .map_err(|e| format!("JetStream stream {name} is not available: {e}"))
}

/// Answers whether the server is connected and has the stream, for
/// `/readyz`.
#[derive(Clone)]
pub struct StreamProbe {
    js: jetstream::Context,
    stream: String,
}

impl StreamProbe {
    pub fn new(js: jetstream::Context, stream: &str) -> Self {
        StreamProbe {
            js,
            stream: stream.to_owned(),
        }
    }

    /// Asks the server for the stream within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let state = self.js.client().connection_state();
        if state != State::Connected {
            return Err(format!("not connected to NATS ({state:?})"));
        }
        // get_stream asks the server for the stream's info (the no-info
        // variant would not ask at all).
        match tokio::time::timeout(timeout, self.js.get_stream(&self.stream)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("JetStream stream {} unavailable: {e}", self.stream)),
            Err(_) => Err(format!(
                "NATS did not answer within {} ms",
                timeout.as_millis()
            )),
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
    fn defaults_name_the_stream_and_subject_after_audit() {
        let c = NatsConfig::from_vars(vars(&[])).unwrap();
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.stream, "AUDIT");
        assert_eq!(c.subject, "audit.events");
        assert_eq!(c.stream_subjects(), ["audit.>"]);
        assert_eq!(c.auth, NatsAuth::None);
    }

    #[test]
    fn one_way_of_authenticating_and_secrets_never_printed() {
        let c = NatsConfig::from_vars(vars(&[("NATS_USER", "u"), ("NATS_PASSWORD", "hunter2")]))
            .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        let c = NatsConfig::from_vars(vars(&[("NATS_TOKEN", "s3cret")])).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let err =
            NatsConfig::from_vars(vars(&[("NATS_TOKEN", "t"), ("NATS_CREDS", "/x")])).unwrap_err();
        assert!(err.to_string().contains("one way"), "{err}");
        let err = NatsConfig::from_vars(vars(&[("NATS_USER", "u")])).unwrap_err();
        assert!(err.to_string().contains("NATS_PASSWORD"), "{err}");
    }

    #[test]
    fn bad_names_and_subjects_are_refused_by_variable() {
        let err = NatsConfig::from_vars(vars(&[("NATS_SUBJECT", "audit.*")])).unwrap_err();
        assert!(err.to_string().contains("NATS_SUBJECT"), "{err}");
        let err = NatsConfig::from_vars(vars(&[("NATS_STREAM", "a.b")])).unwrap_err();
        assert!(err.to_string().contains("NATS_STREAM"), "{err}");
        assert!(NatsConfig::from_vars(vars(&[("NATS_SUBJECT", "x.y.z")])).is_ok());
    }
}
