//! The operator's commands for events the relay gave up on:
//! `user-service dead-letters list [--json]` and
//! `user-service dead-letters redrive <seq>...|--all`.

use crate::outbox::Redrive;
use crate::store::Backend;
use anyhow::Context;

/// `dead-letters <command>`.
#[derive(Debug, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Show the events parked as dead letters
    List {
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Set dead letters back to pending: the running relay sends them again
    Redrive {
        /// The seqs of the dead letters to send again
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seqs: Vec<i64>,
        /// Every dead letter
        #[arg(long)]
        all: bool,
    },
}

impl Command {
    /// Parses `args`, the words after `dead-letters`.
    pub fn from_args<I, T>(args: I) -> Result<Command, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        #[command(name = "dead-letters")]
        struct DeadLetters {
            #[command(subcommand)]
            command: Command,
        }
        let words = std::iter::once(std::ffi::OsString::from("dead-letters"))
            .chain(args.into_iter().map(Into::into));
        <DeadLetters as clap::Parser>::try_parse_from(words).map(|d| d.command)
    }
}

/// Runs `command` against the database at `database_url`, writing the
/// result to `out`.
pub async fn run(
    command: Command,
    database_url: &str,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    // One connection: an operator command next to a running service.
    let store = crate::store::open_existing(database_url).await?;
    execute(store.as_ref(), command, out).await
}

async fn execute(
    store: &dyn Backend,
    command: Command,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    match command {
        Command::List { json } => {
            let dead = store
                .dead_letters()
                .await
                .context("Failed to read dead letters")?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &dead)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "seq\tevent_id\ttype\tuser_id\tattempts\tstatus\treason"
                )?;
                for d in &dead {
                    let status = d.status.map_or("-".to_owned(), |s| s.to_string());
                    let reason = d
                        .reason
                        .as_deref()
                        .unwrap_or("-")
                        .replace(['\n', '\t'], " ");
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        d.seq, d.event_id, d.event_type, d.user_id, d.attempts, status, reason
                    )?;
                }
            }
        }
        Command::Redrive { seqs, all } => {
            let which = if all {
                Redrive::All
            } else {
                Redrive::Seqs(seqs)
            };
            let changed = store.redrive(&which).await.context("Failed to re-drive")?;
            match changed {
                0 => writeln!(out, "there are no dead letters to re-drive")?,
                1 => writeln!(out, "1 dead letter set back to pending")?,
                n => writeln!(out, "{n} dead letters set back to pending")?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_into_commands() {
        let parse = |args: &[&str]| Command::from_args(args.iter().copied());
        assert_eq!(parse(&["list"]).unwrap(), Command::List { json: false });
        assert_eq!(
            parse(&["list", "--json"]).unwrap(),
            Command::List { json: true }
        );
        assert_eq!(
            parse(&["redrive", "3", "5"]).unwrap(),
            Command::Redrive {
                seqs: vec![3, 5],
                all: false
            }
        );
        assert_eq!(
            parse(&["redrive", "--all"]).unwrap(),
            Command::Redrive {
                seqs: vec![],
                all: true
            }
        );
        for wrong in [
            &["redrive"][..],
            &["redrive", "x"],
            &["redrive", "3", "--all"],
            &["drop"],
            &[],
        ] {
            assert!(parse(wrong).is_err(), "{wrong:?}");
        }
    }
}
