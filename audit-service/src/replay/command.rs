//! The operator's commands: `audit-service replay` makes a replay and runs
//! it in this process (unless a running service's replica takes it first),
//! following it with a progress bar on a terminal and plain lines
//! otherwise; `audit-service replays` lists them.

use super::db::{self, ReplayRow, ReplayState};
use super::spec::{BrokerMode, Erased, HttpMode, ReplayRequest, Target};
use super::{ReplaySettings, Replays, Wake};
use crate::store::Store;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the command reads the replay's progress.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// How often it prints a line when not on a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// What `audit-service replay` was given.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Only events matching this CESQL expression
    #[arg(long)]
    pub filter: Option<String>,
    /// The first seq, or an RFC 3339 time (events received at or after it)
    #[arg(long)]
    pub from: Option<String>,
    /// The last seq (inclusive), or an RFC 3339 time (events received before it)
    #[arg(long)]
    pub to: Option<String>,
    /// Where: http://URL or https://URL, kafka:TOPIC, nats:STREAM/SUBJECT, mqtt:TOPIC
    #[arg(long, required_unless_present = "dry_run")]
    pub target: Option<String>,
    /// binary (default), structured, or batch (HTTP only)
    #[arg(long)]
    pub mode: Option<String>,
    /// Events a second at most
    #[arg(long)]
    pub rate: Option<u32>,
    /// Only count what would be sent
    #[arg(long)]
    pub dry_run: bool,
    /// Add the `replayid` extension to every event sent
    #[arg(long)]
    pub replayid: bool,
    /// Leave out events whose data was erased (default: send them without data)
    #[arg(long)]
    pub skip_erased: bool,
}

impl ReplayArgs {
    fn request(self) -> anyhow::Result<ReplayRequest> {
        let (from_seq, from_time) = seq_or_time("--from", self.from.as_deref())?;
        let (to_seq, to_time) = seq_or_time("--to", self.to.as_deref())?;
        let target = match self.target {
            Some(target) => Some(parse_target(target, self.mode.as_deref())?),
            None => None,
        };
        Ok(ReplayRequest {
            filter: self.filter,
            from_seq,
            to_seq,
            from_time,
            to_time,
            target,
            rate: self.rate,
            dry_run: self.dry_run,
            replayid: self.replayid,
            erased: if self.skip_erased {
                Erased::Skip
            } else {
                Erased::Send
            },
        })
    }
}

/// `--target` and `--mode`.
fn parse_target(target: String, mode: Option<&str>) -> anyhow::Result<Target> {
    let broker_mode = || -> anyhow::Result<BrokerMode> {
        Ok(match mode {
            None | Some("binary") => BrokerMode::Binary,
            Some("structured") => BrokerMode::Structured,
            Some(other) => bail!("--mode {other:?}: expected binary or structured"),
        })
    };
    if target.starts_with("http://") || target.starts_with("https://") {
        let mode = match mode {
            None | Some("binary") => HttpMode::Binary,
            Some("structured") => HttpMode::Structured,
            Some("batch") => HttpMode::Batch,
            Some(other) => bail!("--mode {other:?}: expected binary, structured or batch"),
        };
        return Ok(Target::Http {
            url: target,
            mode,
            batch_size: None,
        });
    }
    if let Some(topic) = target.strip_prefix("kafka:") {
        return Ok(Target::Kafka {
            topic: topic.to_owned(),
            brokers: None,
        });
    }
    if let Some(rest) = target.strip_prefix("nats:") {
        let Some((stream, subject)) = rest.split_once('/') else {
            bail!("--target nats:STREAM/SUBJECT, got {target:?}");
        };
        return Ok(Target::Nats {
            subject: subject.to_owned(),
            stream: stream.to_owned(),
            url: None,
            mode: broker_mode()?,
        });
    }
    if let Some(topic) = target.strip_prefix("mqtt:") {
        return Ok(Target::Mqtt {
            topic: topic.to_owned(),
            url: None,
            mode: broker_mode()?,
        });
    }
    bail!(
        "--target {target:?}: expected http://URL, https://URL, kafka:TOPIC, \
         nats:STREAM/SUBJECT or mqtt:TOPIC"
    )
}

type SeqOrTime = (Option<i64>, Option<DateTime<Utc>>);

/// A seq (digits) or an RFC 3339 time.
fn seq_or_time(flag: &str, value: Option<&str>) -> anyhow::Result<SeqOrTime> {
    let Some(value) = value else {
        return Ok((None, None));
    };
    if let Ok(seq) = value.parse::<i64>() {
        return Ok((Some(seq), None));
    }
    match DateTime::parse_from_rfc3339(value) {
        Ok(time) => Ok((None, Some(time.with_timezone(&Utc)))),
        Err(_) => bail!("{flag} {value:?}: expected a seq or an RFC 3339 time"),
    }
}

/// `audit-service replay ...`.
pub async fn replay(args: ReplayArgs, settings: ReplaySettings) -> anyhow::Result<()> {
    let request = args.request()?;
    let (store, writer) = open_store().await?;
    let result = async {
        let row = super::create(&store, request)
            .await
            .context("The replay was not made")?;
        let stop = CancellationToken::new();
        let supervisor =
            Replays::new(store.clone(), settings, Wake::default(), stop.clone()).spawn();
        let followed = follow(&store, &row).await;
        stop.cancel();
        let _ = supervisor.await;
        followed
    }
    .await;
    drop(store);
    writer.close().await;
    result
}

/// Shows the replay's progress until it ends (or Ctrl-C, which leaves it to
/// a running service).
async fn follow(store: &Store, created: &ReplayRow) -> anyhow::Result<()> {
    let total = u64::try_from(created.to_seq - created.from_seq + 1).unwrap_or(0);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} seq {pos}/{len} ({eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    println!("replay {}", created.id);
    let mut last_line = tokio::time::Instant::now() - LINE_INTERVAL;
    loop {
        let row = db::get(store.readers(), &created.id)
            .await
            .context("Failed to read the replay")?
            .context("The replay is gone")?;
        let done = u64::try_from(row.position - (row.from_seq - 1)).unwrap_or(0);
        let counts = format!(
            "sent {}, failed attempts {}, dead letters {}, skipped {}",
            row.counts.sent, row.counts.failed, row.counts.dead_lettered, row.counts.skipped
        );
        match &bar {
            Some(bar) => {
                bar.set_position(done.min(total));
                bar.set_message(counts.clone());
            }
            None if last_line.elapsed() >= LINE_INTERVAL => {
                last_line = tokio::time::Instant::now();
                println!(
                    "{} {} seq {}/{} {counts}",
                    row.id,
                    row.state.as_str(),
                    done.min(total),
                    total
                );
            }
            None => {}
        }
        let ended = matches!(
            row.state,
            ReplayState::Done | ReplayState::Cancelled | ReplayState::Failed
        );
        if ended {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            println!("{} {}: {counts}", row.id, row.state.as_str());
            if let Some(error) = &row.error {
                bail!("replay {} failed: {error}", row.id);
            }
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                println!("stopped following replay {}: a running audit-service goes on with it \
                          (DELETE /v1/replays/{} cancels it)", row.id, row.id);
                return Ok(());
            }
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
    }
}

/// `audit-service replays [--json]`.
pub async fn list(json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let (store, writer) = open_store().await?;
    let rows = db::list(store.readers(), 1000).await;
    drop(store);
    writer.close().await;
    let rows = rows.context("Failed to read the replays")?;
    if json {
        let statuses: Vec<_> = rows
            .into_iter()
            .map(super::routes::ReplayStatus::of)
            .collect();
        serde_json::to_writer_pretty(&mut *out, &statuses)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<9}  {:>21}  {:>9}  {:>6}  {:>6}  target",
        "id", "state", "seq (position/to)", "sent", "failed", "dead"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:<36}  {:<9}  {:>21}  {:>9}  {:>6}  {:>6}  {}{}",
            row.id,
            row.state.as_str(),
            format!("{}/{}", row.position, row.to_seq),
            row.counts.sent,
            row.counts.failed,
            row.counts.dead_lettered,
            super::describe(row.request.target.as_ref()),
            if row.request.dry_run {
                " (dry run)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

async fn open_store() -> anyhow::Result<(Store, crate::store::WriterHandle)> {
    let url = service_kit::config::database_url("sqlite://data/audit.db")?;
    if let Ok(path) = service_kit::db::sqlite_path(&url) {
        if url.starts_with("sqlite:") && !path.exists() {
            bail!("no audit database at {}", path.display());
        }
    }
    Store::open(&url).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str, from: Option<&str>, mode: Option<&str>) -> ReplayArgs {
        ReplayArgs {
            filter: None,
            from: from.map(str::to_owned),
            to: None,
            target: Some(target.to_owned()),
            mode: mode.map(str::to_owned),
            rate: None,
            dry_run: false,
            replayid: false,
            skip_erased: true,
        }
    }

    #[test]
    fn targets_and_ranges_are_read_from_the_flags() {
        let request = args("kafka:copy", Some("42"), None).request().unwrap();
        assert!(matches!(request.target, Some(Target::Kafka { ref topic, .. }) if topic == "copy"));
        assert_eq!(request.from_seq, Some(42));
        assert_eq!(request.erased, Erased::Skip);
        let request = args("http://x/", Some("2026-12-01T00:00:00Z"), Some("batch"))
            .request()
            .unwrap();
        assert!(matches!(
            request.target,
            Some(Target::Http {
                mode: HttpMode::Batch,
                ..
            })
        ));
        assert!(request.from_time.is_some() && request.from_seq.is_none());
        let request = args("nats:AUDIT/audit.copy", None, None).request().unwrap();
        assert!(
            matches!(request.target, Some(Target::Nats { ref stream, ref subject, .. }) if stream == "AUDIT" && subject == "audit.copy")
        );
        for bad in ["smtp:x", "nats:nostream"] {
            assert!(args(bad, None, None).request().is_err(), "{bad}");
        }
        assert!(args("kafka:t", Some("yesterday"), None).request().is_err());
        assert!(args("mqtt:t", None, Some("batch")).request().is_err());
    }
}
