//! A password in clear, and its argon2id hash.
//!
//! `Password` deliberately has no `Display`, no `Serialize` and a `Debug`
//! that prints nothing of it, so it cannot end up in a log line, a response
//! or an event by accident.

use argon2::password_hash::PasswordHasher;
use argon2::Argon2;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A password as a client sent it, before parsing. Deserializing it never
/// echoes the value in an error message, which serde's own messages for a
/// wrong type would (`invalid type: integer `12345`...`).
pub struct RawPassword(String);

impl<'de> Deserialize<'de> for RawPassword {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Ok(RawPassword(s)),
            _ => Err(serde::de::Error::custom("password must be a string")),
        }
    }
}

impl fmt::Debug for RawPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawPassword(<redacted>)")
    }
}

pub struct Password(String);

/// The seed's example password is "12345", so five characters must pass.
const MIN_CHARS: usize = 5;
/// Bounds the argon2 input a client can make us hash.
const MAX_CHARS: usize = 1024;

impl Password {
    pub fn parse(raw: RawPassword) -> Result<Self, String> {
        let len = raw.0.chars().count();
        if len < MIN_CHARS {
            return Err(format!("password must be at least {MIN_CHARS} characters"));
        }
        if len > MAX_CHARS {
            return Err(format!("password must be at most {MAX_CHARS} characters"));
        }
        Ok(Password(raw.0))
    }

    /// Hashes with argon2id (the crate's default algorithm and parameters)
    /// and a fresh random salt. CPU-heavy: run it on a blocking thread.
    pub fn hash(&self) -> Result<PasswordHash, argon2::password_hash::Error> {
        let hash = Argon2::default().hash_password(self.0.as_bytes())?;
        Ok(PasswordHash(hash.to_string()))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An argon2id PHC string (`$argon2id$v=19$...`).
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{phc, PasswordVerifier};

    fn raw(s: &str) -> RawPassword {
        RawPassword(s.to_owned())
    }

    #[test]
    fn the_seed_password_is_accepted_and_short_or_huge_ones_are_not() {
        assert!(Password::parse(raw("12345")).is_ok());
        assert!(Password::parse(raw("1234")).is_err());
        assert!(Password::parse(raw(&"x".repeat(1025))).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let p = Password::parse(raw("hunter42")).unwrap();
        assert!(!format!("{p:?}").contains("hunter42"));
        assert!(!format!("{:?}", raw("hunter42")).contains("hunter42"));
    }

    #[test]
    fn the_hash_is_argon2id_and_verifies() {
        let hash = Password::parse(raw("hunter42")).unwrap().hash().unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
        let parsed = phc::PasswordHash::new(hash.as_str()).unwrap();
        assert!(Argon2::default()
            .verify_password(b"hunter42", &parsed)
            .is_ok());
    }

    #[test]
    fn a_non_string_password_is_rejected_without_echoing_it() {
        let err = serde_json::from_str::<RawPassword>("12345").unwrap_err();
        assert!(!err.to_string().contains("12345"));
    }
}
