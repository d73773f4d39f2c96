//! The trail's operator commands: `erase`, `verify` and `log-key`.

use super::erase::{self, Selector};
use super::{verify, LogKey, LogSettings};
use crate::store::Store;
use anyhow::{bail, Context};
use shared::config::env_or;
use std::io::Write;

pub const USAGE: &str = "\
usage: audit-service                      serve (the default)
       audit-service erase --subject S    erase the data of every event of subject S
       audit-service verify [--checkpoint FILE] [--key VERIFIER_KEY]
                                          rebuild the log from the stored events and check it
                                          against its latest signed checkpoint (and FILE, a
                                          checkpoint saved earlier); the key defaults to the one
                                          of LOG_SIGNING_KEY / LOG_SIGNING_KEY_FILE
       audit-service log-key ORIGIN       print a new signing key named ORIGIN (the verifier
                                          key goes to stderr)
Commands use DATABASE_URL, which must name an existing database.";

/// Runs `args` (the command's own arguments after its name).
pub async fn run(command: &str, args: &[String], out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        "log-key" => {
            let [origin] = args else {
                bail!("log-key takes one argument, the origin\n{USAGE}");
            };
            let (signer, verifier) = LogKey::generate(origin).map_err(anyhow::Error::msg)?;
            writeln!(out, "{signer}")?;
            eprintln!("verifier key: {verifier}");
            Ok(())
        }
        "erase" => {
            let subject = match args {
                [flag, subject] if flag == "--subject" && !subject.is_empty() => subject,
                _ => bail!("erase takes --subject S\n{USAGE}"),
            };
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
        "verify" => {
            let mut checkpoint = None;
            let mut key = None;
            let mut rest = args.iter();
            while let Some(flag) = rest.next() {
                match (flag.as_str(), rest.next()) {
                    ("--checkpoint", Some(file)) => checkpoint = Some(file.clone()),
                    ("--key", Some(k)) => key = Some(k.clone()),
                    _ => bail!("verify takes [--checkpoint FILE] [--key VERIFIER_KEY]\n{USAGE}"),
                }
            }
            let key = match key {
                Some(key) => key,
                None => match LogSettings::from_env()?.key {
                    Some(key) => key.verifier_key().to_owned(),
                    None => bail!("verify needs --key, or LOG_SIGNING_KEY / LOG_SIGNING_KEY_FILE"),
                },
            };
            let saved = checkpoint
                .map(|file| std::fs::read(&file).with_context(|| format!("Failed to read {file}")))
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
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

async fn open_store() -> anyhow::Result<(Store, crate::store::WriterHandle)> {
    let url = env_or("DATABASE_URL", "sqlite://data/audit.db");
    if let Ok(path) = shared::db::sqlite_path(&url) {
        if url.starts_with("sqlite:") && !path.exists() {
            bail!("no audit database at {}", path.display());
        }
    }
    Store::open(&url).await
}
