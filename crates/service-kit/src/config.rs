//! The settings every service reads the same way: where it listens
//! (`LISTEN_ADDR`) and its database (`DATABASE_URL`).

use settings::{env_or, ConfigError};
use std::net::{SocketAddr, ToSocketAddrs};

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
            value: settings::redact::url(&url),
            reason: format!(
                "use a sqlite:// URL (a file, such as {default}) or a \
                 postgres://user:password@host:port/database URL"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
