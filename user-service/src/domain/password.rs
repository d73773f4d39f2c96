//! A password in clear, and its argon2id hash.
//!
//! `Password` deliberately has no `Display`, no `Serialize` and a `Debug`
//! that prints nothing of it, so it cannot end up in a log line, a response
//! or an event by accident.

use argon2::password_hash::phc::{self, Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// argon2id with 12 MiB, 3 passes, 1 lane: one of the configurations the
/// OWASP Password Storage Cheat Sheet lists as equal in defence to the
/// crate's default (19 MiB, 2 passes), trading memory for a pass at about
/// the same CPU time. Memory is what a hashing thread holds for the life
/// of the process (one per core, `HASH_CONCURRENCY`): with 19 MiB, two of
/// them were 39 of user-service's 72 MiB peak under creates. A stored hash
/// names its parameters, so hashes made with others still verify.
pub const PARAMS: Params = match Params::new(12 * 1024, 3, 1, None) {
    Ok(params) => params,
    Err(_) => panic!("argon2 parameters out of range"),
};

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

    /// The argon2 working memory one hash needs, in blocks (12 MiB).
    pub fn memory_blocks() -> usize {
        PARAMS.block_count()
    }

    /// Hashes with argon2id ([`PARAMS`]) and a fresh random salt, working
    /// in `memory` (at least [`Self::memory_blocks`] blocks), which the
    /// caller keeps and reuses. CPU-heavy: run it on a thread of its own.
    pub fn hash_with(&self, memory: &mut [Block]) -> Result<PasswordHash, HashFailure> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS);
        let salt = argon2::password_hash::try_generate_salt()
            .map_err(|e| HashFailure(format!("no random salt: {e}")))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let blocks = Self::memory_blocks();
        let memory = memory
            .get_mut(..blocks)
            .ok_or_else(|| HashFailure(format!("working memory under {blocks} blocks")))?;
        argon2
            .hash_password_into_with_memory(self.0.as_bytes(), &salt, &mut out, memory)
            .map_err(|e| HashFailure(e.to_string()))?;
        // The PHC string through the crate's own types, as its
        // `hash_password` would build it.
        let phc = phc::PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&PARAMS).map_err(|e| HashFailure(e.to_string()))?,
            salt: Some(Salt::new(&salt).map_err(|e| HashFailure(e.to_string()))?),
            hash: Some(Output::new(&out).map_err(|e| HashFailure(e.to_string()))?),
        };
        Ok(PasswordHash(phc.to_string()))
    }
}

/// Why a hash could not be made (never the password).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HashFailure(String);

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
    use argon2::password_hash::PasswordVerifier;

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
    fn the_hash_is_argon2id_with_the_chosen_parameters_and_verifies() {
        let mut memory = vec![Block::default(); Password::memory_blocks()];
        let password = Password::parse(raw("hunter42")).unwrap();
        let hash = password.hash_with(&mut memory).unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=12288,t=3,p=1$"),
            "{}",
            hash.as_str()
        );
        let parsed = phc::PasswordHash::new(hash.as_str()).unwrap();
        assert!(Argon2::default()
            .verify_password(b"hunter42", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"hunter43", &parsed)
            .is_err());
        // The same memory again: a new salt, a different hash, still valid.
        let again = password.hash_with(&mut memory).unwrap();
        assert_ne!(again.as_str(), hash.as_str());
        let parsed = phc::PasswordHash::new(again.as_str()).unwrap();
        assert!(Argon2::default()
            .verify_password(b"hunter42", &parsed)
            .is_ok());
    }

    #[test]
    fn too_little_working_memory_is_an_error_not_a_panic() {
        let mut memory = vec![Block::default(); 8];
        assert!(Password::parse(raw("hunter42"))
            .unwrap()
            .hash_with(&mut memory)
            .is_err());
    }

    #[test]
    fn a_non_string_password_is_rejected_without_echoing_it() {
        let err = serde_json::from_str::<RawPassword>("12345").unwrap_err();
        assert!(!err.to_string().contains("12345"));
    }
}
