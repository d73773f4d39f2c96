//! The log's key and its checkpoints: a C2SP tlog-checkpoint (origin, size,
//! root hash) in a C2SP signed note, signed with Ed25519. The note format
//! and key encodings are `signed_note`'s (Go's `sumdb/note`): the signer
//! key is `PRIVATE+KEY+<name>+<id>+<key>`, the verifier key
//! `<name>+<id>+<key>`, and the key's name is the checkpoint's origin.

use base64::prelude::{Engine as _, BASE64_STANDARD};
use signed_note::{Note, Signer as _, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

/// The Ed25519 algorithm byte of a note key.
const ALG_ED25519: u8 = 1;

/// The log's signing key. Its `Debug` never shows the key.
pub struct LogKey {
    signer: StandardSigner,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey({})", self.verifier_key)
    }
}

impl LogKey {
    /// Parses a note signer key. The error never quotes the key.
    pub fn parse(signer_key: &str) -> Result<Self, String> {
        let signer_key = signer_key.trim();
        let refused = |why: &str| {
            format!("not a note signer key (PRIVATE+KEY+<name>+<id>+<Ed25519 key>): {why}")
        };
        let signer = StandardSigner::new(signer_key).map_err(|e| refused(&e.to_string()))?;
        // StandardSigner keeps its public key to itself; it is derived
        // again here for the verifier key.
        // PRIVATE+KEY+<name>+<id>+<key>: the name has no '+', the base64
        // key may.
        let key = signer_key
            .splitn(5, '+')
            .nth(4)
            .and_then(|k| BASE64_STANDARD.decode(k).ok())
            .ok_or_else(|| refused("no key"))?;
        let seed: [u8; 32] = match key.split_first() {
            Some((&ALG_ED25519, seed)) => seed.try_into().map_err(|_| refused("key length"))?,
            _ => return Err(refused("not Ed25519")),
        };
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let verifier_key = signed_note::new_ed25519_verifier_key(signer.name(), &public);
        Ok(LogKey {
            signer,
            verifier_key,
        })
    }

    /// A new key named `origin`: (signer key, verifier key).
    pub fn generate(origin: &str) -> Result<(String, String), String> {
        if !valid_origin(origin) {
            return Err(format!(
                "{origin:?} is not a key name: no spaces, no '+', not empty"
            ));
        }
        Ok(signed_note::generate_key(&mut rand_core::OsRng, origin))
    }

    /// The checkpoints' origin: the key's name.
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// `<name>+<id>+<key>`, served at `/log/key`.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The signed checkpoint of a tree of `size` with root `root`.
    pub fn sign(&self, size: u64, root: Hash) -> Result<String, String> {
        let checkpoint = Checkpoint::new(self.origin(), size, root, "")
            .map_err(|e| format!("checkpoint: {e}"))?;
        let mut note = Note::new(&checkpoint.to_bytes(), &[]).map_err(|e| e.to_string())?;
        note.add_sigs(&[&self.signer]).map_err(|e| e.to_string())?;
        String::from_utf8(note.to_bytes()).map_err(|e| e.to_string())
    }
}

/// A key name (and so an origin): not empty, no Unicode space, no '+'.
pub fn valid_origin(origin: &str) -> bool {
    !origin.is_empty() && !origin.chars().any(|c| c.is_whitespace() || c == '+')
}

/// A checkpoint whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedTree {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Opens a signed checkpoint with `verifier_key`.
pub fn open(note: &[u8], verifier_key: &str) -> Result<SignedTree, String> {
    let verifier = StandardVerifier::new(verifier_key).map_err(|e| format!("verifier key: {e}"))?;
    let origin = signed_note::Verifier::name(&verifier).to_owned();
    let note = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    note.verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| format!("the signature does not verify: {e}"))?;
    let checkpoint =
        Checkpoint::from_bytes(note.text()).map_err(|e| format!("not a checkpoint: {e}"))?;
    if checkpoint.origin() != origin {
        return Err(format!(
            "the checkpoint's origin {:?} is not the key's {origin:?}",
            checkpoint.origin()
        ));
    }
    Ok(SignedTree {
        origin,
        size: checkpoint.size(),
        root: *checkpoint.hash(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_opens_with_the_verifier_key_and_not_with_another() {
        // Keys whose base64 holds a '+', as about one in three does.
        for _ in 0..8 {
            let (signer, verifier) = LogKey::generate("example.com/audit").unwrap();
            assert_eq!(LogKey::parse(&signer).unwrap().verifier_key(), verifier);
        }
        let (signer, verifier) = LogKey::generate("example.com/audit").unwrap();
        let key = LogKey::parse(&signer).unwrap();
        assert_eq!(key.verifier_key(), verifier);
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let root = tlog_tiles::record_hash(b"x");
        let note = key.sign(3, root).unwrap();
        assert!(note.starts_with("example.com/audit\n3\n"), "{note}");
        assert!(note.contains("\n\n\u{2014} example.com/audit "), "{note}");
        assert_eq!(
            open(note.as_bytes(), &verifier).unwrap(),
            SignedTree {
                origin: "example.com/audit".into(),
                size: 3,
                root
            }
        );
        let (_, other) = LogKey::generate("example.com/audit").unwrap();
        assert!(open(note.as_bytes(), &other).is_err());
        let forged = note.replacen("\n3\n", "\n4\n", 1);
        assert!(open(forged.as_bytes(), &verifier).is_err());
    }

    #[test]
    fn a_bad_key_is_refused_without_being_quoted() {
        for bad in ["", "PRIVATE+KEY+x+00000000+AAAA", "hunter2hunter2"] {
            let error = LogKey::parse(bad).unwrap_err();
            assert!(bad.is_empty() || !error.contains(bad), "{error}");
        }
        assert!(LogKey::generate("has space").is_err());
    }
}
