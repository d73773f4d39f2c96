//! Hiding the credentials a URL-like setting may carry before it is logged
//! or put in an error message: one function for every such setting
//! ([`URL_SETTINGS`]), whatever reads it.
//!
//! Written by hand, on the text, rather than with a URL parser: what must
//! be hidden is what a reader of the setting might take for a password,
//! and parsers disagree with each other and with people. `url::Url` reads
//! `postgres://admin:1234/5678@db/audit` (a password with an unencoded
//! `/`) as the host `admin`, port 1234 and the path `/5678@db/audit`, so a
//! parser-based mask found no password and logged it whole; sqlx also
//! takes the password from a `?password=` query parameter.

/// What a secret is replaced with.
const MASK: &str = "***";

/// Every setting of either service whose value is a URL, or a list of them,
/// that may carry credentials. Each goes through [`url`] or [`urls`]
/// wherever it is quoted (a test starts both services with each set to a
/// value full of secrets and reads every line they print).
pub const URL_SETTINGS: &[&str] = &[
    "DATABASE_URL",
    "KAFKA_BROKERS",
    "NATS_URL",
    "AUDIT_URL",
    // Refused with credentials in it (they go in MQTT_USERNAME and
    // MQTT_PASSWORD), and that refusal quotes it redacted.
    "MQTT_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// Query parameters whose value is a secret: sqlx's and libpq's
/// `password`, and the usual names of tokens and keys in URLs.
const SECRET_PARAMETERS: &[&str] = &["pass", "pwd", "secret", "token", "auth", "key", "sig"];

/// Schemes whose user info without a password is a secret of its own: a
/// NATS URL's `nats://<token>@host`.
const TOKEN_SCHEMES: &[&str] = &["nats", "tls", "ws", "wss"];

/// `raw` with its secrets replaced by `***`, the rest as written:
///
/// - the password of the user info (`postgres://audit:s3cret@db/audit` ->
///   `postgres://audit:***@db/audit`). The user info runs to the last `@`
///   before the query, so an unencoded `@` or `/` in the password is
///   hidden too (with, at worst, more than the password, never less);
/// - the user info of a NATS URL that has no password: it is a token;
/// - the value of every query parameter whose name says it is a secret
///   (`?password=`, `?sslpassword=`, `?token=`, `?api_key=`...).
pub fn url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => (&raw[..i], &raw[i + 3..]),
        None => ("", raw),
    };
    let prefix = &raw[..raw.len() - rest.len()];
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_at);
    let mut out = String::with_capacity(raw.len());
    out.push_str(prefix);
    match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host) = before_query.split_at(at);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None if TOKEN_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => {
                    out.push_str(MASK)
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(before_query),
    }
    out.push_str(&mask_query(query));
    out
}

/// Each URL of a comma-separated list (`KAFKA_BROKERS`, `NATS_URL`)
/// through [`url`].
pub fn urls(list: &str) -> String {
    list.split(',').map(url).collect::<Vec<_>>().join(",")
}

/// `text` (a library's log line or error, which may quote a setting) with
/// every word that holds an `@` through [`url`]: librdkafka writes a broker
/// `u:s3cret@host:9092` into its reports, reqwest the URL it failed to
/// reach.
pub fn in_text(text: &str) -> String {
    if !text.contains('@') {
        return text.to_owned();
    }
    text.split_inclusive(char::is_whitespace)
        .map(|word| match word.contains('@') {
            true => url(word),
            false => word.to_owned(),
        })
        .collect()
}

/// `?a=1&password=x#f` -> `?a=1&password=***#f`.
fn mask_query(query: &str) -> String {
    let Some(body) = query.strip_prefix('?') else {
        return query.to_owned();
    };
    let (parameters, fragment) = match body.find('#') {
        Some(i) => body.split_at(i),
        None => (body, ""),
    };
    let masked: Vec<String> = parameters
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _)) if is_secret(name) => format!("{name}={MASK}"),
            _ => parameter.to_owned(),
        })
        .collect();
    format!("?{}{fragment}", masked.join("&"))
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMETERS.iter().any(|secret| name.contains(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_masked_and_the_rest_kept() {
        assert_eq!(
            url("postgres://audit:s3cret@db.internal:5432/audit?sslmode=require"),
            "postgres://audit:***@db.internal:5432/audit?sslmode=require"
        );
        assert_eq!(
            url("https://user:p%40ss@example.com/path"),
            "https://user:***@example.com/path"
        );
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for raw in [
            "sqlite://data/audit.db",
            "sqlite::memory:",
            "http://localhost:8080/",
            "postgres://audit@db/audit",
            "postgres://db/audit?sslmode=require&application_name=x",
            "127.0.0.1:9092",
            "nats://127.0.0.1:4222",
            "",
        ] {
            assert_eq!(url(raw), raw);
        }
    }

    #[test]
    fn what_is_not_a_url_with_a_host_is_masked_too() {
        assert_eq!(url("user:s3cret@broker:9092"), "user:***@broker:9092");
        assert_eq!(
            url("postgres://audit:se/cret@db/audit"),
            "postgres://audit:***@db/audit"
        );
        assert_eq!(
            urls("a:9092,SASL_SSL://u:s3cret@b:9093,user:pw@c:9094"),
            "a:9092,SASL_SSL://u:***@b:9093,user:***@c:9094"
        );
    }

    /// The password a URL parser reads as a port and a path.
    #[test]
    fn userinfo_a_parser_takes_for_host_and_port_is_masked() {
        assert_eq!(
            url("postgres://admin:1234/5678@db/audit"),
            "postgres://admin:***@db/audit"
        );
        assert_eq!(url("admin:1234/5678@host"), "admin:***@host");
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        assert_eq!(
            url("postgres://audit@db/audit?password=s3cret&sslmode=require"),
            "postgres://audit@db/audit?password=***&sslmode=require"
        );
        assert_eq!(
            url("postgres://db/audit?sslmode=require&sslpassword=x&PASSWORD=y#frag"),
            "postgres://db/audit?sslmode=require&sslpassword=***&PASSWORD=***#frag"
        );
        assert_eq!(
            url("https://collector:4318/v1/traces?api_key=k&token=t"),
            "https://collector:4318/v1/traces?api_key=***&token=***"
        );
    }

    #[test]
    fn a_nats_token_in_the_user_info_is_masked() {
        assert_eq!(url("nats://s3cret@host:4222"), "nats://***@host:4222");
        assert_eq!(
            urls("nats://u:p@a:4222,tls://tok@b:4222"),
            "nats://u:***@a:4222,tls://***@b:4222"
        );
    }

    #[test]
    fn urls_quoted_in_a_log_line_are_masked() {
        assert_eq!(
            in_text(
                "FAIL [thrd:u:s3cret@h:9092/bootstrap]: Failed to resolve 'u:s3cret@h:9092':  x"
            ),
            "FAIL [thrd:***@h:9092/bootstrap]: Failed to resolve 'u:***@h:9092':  x"
        );
        assert_eq!(
            in_text("error sending request for url (http://a:1/s3cret@h/): refused"),
            "error sending request for url (http://a:***@h/): refused"
        );
        assert_eq!(in_text("no secrets here\n"), "no secrets here\n");
    }

    #[test]
    fn nothing_of_the_password_survives() {
        for raw in [
            "postgres://u:s3cret@h/db",
            "postgres://u:s3c@ret@h/db",
            "postgres://u:s3/cret@h/db",
            "postgres://u:s3:cret@h/db",
            "postgres://u@h/db?password=s3cret",
            "u:s3cret@h:1",
            "SASL_SSL://u:s3cret@h:1",
            "nats://s3cret@h:1",
        ] {
            let redacted = url(raw);
            for part in ["s3cret", "s3c", "cret"] {
                assert!(!redacted.contains(part), "{raw} -> {redacted}");
            }
        }
    }
}
