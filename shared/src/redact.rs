//! Hiding the credentials a URL may carry (`scheme://user:pass@host/...`)
//! before it is logged or put in an error message.

use url::Url;

/// What a password is replaced with.
const MASK: &str = "***";

/// `raw` with the password of its user info replaced by `***`:
/// `postgres://audit:s3cret@db/audit` -> `postgres://audit:***@db/audit`.
/// A string that is not a well-formed URL with a host (a broker written
/// `user:pass@host:9092`, a password with an unencoded `/`) is cut by hand:
/// whatever stands between the first `:` after the scheme and the last `@`
/// is masked, which may hide more than a password but never less.
pub fn url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut parsed) if parsed.has_host() => {
            if parsed.password().is_none() {
                return raw.to_owned();
            }
            match parsed.set_password(Some(MASK)) {
                Ok(()) => parsed.into(),
                Err(()) => by_hand(raw),
            }
        }
        _ => by_hand(raw),
    }
}

/// Each URL of a comma-separated list (`KAFKA_BROKERS`) through `url`.
pub fn urls(list: &str) -> String {
    list.split(',').map(url).collect::<Vec<_>>().join(",")
}

fn by_hand(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let rest = &raw[start..];
    let Some(at) = rest.rfind('@') else {
        return raw.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}:{MASK}{}", &raw[..start + colon], &rest[at..]),
        None => raw.to_owned(),
    }
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
            "127.0.0.1:9092",
            "",
        ] {
            assert_eq!(url(raw), raw);
        }
    }

    #[test]
    fn what_is_not_a_url_with_a_host_is_masked_by_hand() {
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

    #[test]
    fn nothing_of_the_password_survives() {
        for raw in [
            "postgres://u:s3cret@h/db",
            "postgres://u:s3c@ret@h/db",
            "postgres://u:s3/cret@h/db",
            "u:s3cret@h:1",
            "SASL_SSL://u:s3cret@h:1",
        ] {
            let redacted = url(raw);
            for part in ["s3cret", "s3c", "cret"] {
                assert!(!redacted.contains(part), "{raw} -> {redacted}");
            }
        }
    }
}
