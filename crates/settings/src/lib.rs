//! Configuration from the environment, as both services read it: typed
//! readers whose errors name the variable ([`env`]), secret settings and
//! bearer tokens that are never printed ([`secret`]), and the redaction of
//! credentials from URL-like settings before they are shown ([`redact`]).
//!
//! No I/O beyond reading variables and secret files, and no heavy
//! dependency: the broker clients and the service kit both build on it.

pub mod env;
pub mod redact;
pub mod secret;

pub use env::{env_or, env_parse, ConfigError};
pub use secret::{BearerToken, Tokens, MIN_TOKEN_CHARS};
