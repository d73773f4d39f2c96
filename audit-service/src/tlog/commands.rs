//! The trail's operator commands: `erase`, `verify` and `log-key`.

use super::erase::{self, Selector};
use super::{verify, LogKey, LogSettings};
use crate::store::Store;
use anyhow::{bail, Context};
use settings::env_or;
use std::io::Write;
use std::path::Path;

/// `audit-service log-key ORIGIN`: a new signing key on `out`, its verifier
/// key on stderr.
pub fn log_key(origin: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let (signer, verifier) = LogKey::generate(origin).map_err(anyhow::Error::msg)?;
    writeln!(out, "{signer}")?;
    eprintln!("verifier key: {verifier}");
    Ok(())
}

/// `audit-service erase --subject S`.
pub async fn erase(subject: &str, out: &mut impl Write) -> anyhow::Result<()> {
    if subject.is_empty() {
        bail!("erase needs a subject: --subject S");
    }
    let (store, writer) = open_store().await?;
    let erased = erase::erase_and_record(
        &store,
        Selector::Subject(subject),
        "audit-service erase (the command line)",
    )
    .await
    .context("Failed to erase")?;
    drop(store);
    writer.close().await;
    writeln!(
        out,
        "erased the data of {erased} events of subject {subject:?}"
    )?;
    Ok(())
}

/// `audit-service verify [--checkpoint FILE] [--key VERIFIER_KEY]`.
pub async fn verify(
    checkpoint: Option<&Path>,
    key: Option<String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let key = match key {
        Some(key) => key,
        None => match LogSettings::from_env()?.key {
            Some(key) => key.verifier_key().to_owned(),
            None => bail!("verify needs --key, or LOG_SIGNING_KEY / LOG_SIGNING_KEY_FILE"),
        },
    };
    let saved = checkpoint
        .map(|file| {
            std::fs::read(file).with_context(|| format!("Failed to read {}", file.display()))
        })
        .transpose()?;
    let (store, writer) = open_store().await?;
    let result = verify::verify(&store, &key, saved.as_deref()).await;
    drop(store);
    writer.close().await;
    match result {
        Ok(verified) => {
            write!(
                out,
                "verified: {} entries match the latest signed checkpoint",
                verified.size
            )?;
            if let Some(saved) = verified.saved {
                write!(out, ", consistent with the saved checkpoint of {saved}")?;
            }
            writeln!(out)?;
            Ok(())
        }
        Err(mismatch) => bail!("verification failed: {mismatch}"),
    }
}

async fn open_store() -> anyhow::Result<(Store, crate::store::WriterHandle)> {
    let url = env_or("DATABASE_URL", "sqlite://data/audit.db");
    if let Ok(path) = service_kit::db::sqlite_path(&url) {
        if url.starts_with("sqlite:") && !path.exists() {
            bail!("no audit database at {}", path.display());
        }
    }
    Store::open(&url).await
}
