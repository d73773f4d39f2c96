//! The operator's commands for events the relay gave up on:
//! `user-service dead-letters list [--json]` and
//! `user-service dead-letters redrive <seq>...|--all`.

use crate::outbox::Redrive;
use crate::store::Backend;
use anyhow::{bail, Context};

pub const USAGE: &str = "usage:
  user-service                                 run the service
  user-service dead-letters list [--json]      show events parked as dead letters
  user-service dead-letters redrive <seq>...   send these again (the running relay picks them up)
  user-service dead-letters redrive --all      send all of them again
The database is DATABASE_URL (default sqlite://data/users.db; postgres:// works too); it must exist.";

/// Runs `dead-letters <args>` against the database at `database_url`,
/// writing the result to `out`.
pub async fn run(
    args: &[String],
    database_url: &str,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let command = parse(&args)?;
    // One connection: an operator command next to a running service.
    let store = crate::store::open_existing(database_url).await?;
    execute(store.as_ref(), command, out).await
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    List { json: bool },
    Redrive(Redrive),
}

fn parse(args: &[&str]) -> anyhow::Result<Command> {
    match args {
        ["list"] => Ok(Command::List { json: false }),
        ["list", "--json"] => Ok(Command::List { json: true }),
        ["redrive", "--all"] => Ok(Command::Redrive(Redrive::All)),
        ["redrive", seqs @ ..] if !seqs.is_empty() => {
            let seqs = seqs
                .iter()
                .map(|s| {
                    s.parse::<i64>()
                        .with_context(|| format!("{s:?} is not a seq number"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Command::Redrive(Redrive::Seqs(seqs)))
        }
        _ => bail!("{USAGE}"),
    }
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
        Command::Redrive(which) => {
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
        assert_eq!(parse(&["list"]).unwrap(), Command::List { json: false });
        assert_eq!(
            parse(&["list", "--json"]).unwrap(),
            Command::List { json: true }
        );
        assert_eq!(
            parse(&["redrive", "3", "5"]).unwrap(),
            Command::Redrive(Redrive::Seqs(vec![3, 5]))
        );
        assert_eq!(
            parse(&["redrive", "--all"]).unwrap(),
            Command::Redrive(Redrive::All)
        );
        assert!(parse(&["redrive"]).is_err());
        assert!(parse(&["redrive", "x"]).is_err());
        assert!(parse(&["drop"]).is_err());
    }
}
