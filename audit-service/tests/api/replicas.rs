//! Several stores on one PostgreSQL database, as several replicas have:
//! each event is stored once, and readers paging by seq (the query API, the
//! live tail) see every event even while the replicas' transactions commit
//! concurrently. These always run on PostgreSQL, whatever TEST_DATABASE
//! says, and fail when it is not running.

use audit_service::store::{PageQuery, Received, Store, StoredEvent};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use cloudevents_wire::Transport;
use futures::future::join_all;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn event(source: &str, id: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source(source)
        .ty("t")
        .build()
        .unwrap()
}

/// Pages through everything after `after`, as `GET /v1/events` does.
async fn read_after(store: &Store, after: i64) -> Vec<StoredEvent> {
    store
        .page(
            &PageQuery {
                after,
                limit: 100,
                ..PageQuery::default()
            },
            1024 * 1024,
        )
        .await
        .unwrap()
        .events
}

#[tokio::test]
async fn readers_paging_by_seq_while_three_replicas_commit_at_once_miss_no_event() {
    const WRITERS: usize = 3;
    const BATCHES: usize = 60;
    const BATCH: usize = 25;
    let url = test_kit::database::fresh_postgres_database().await;
    let mut stores = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (store, writer) = Store::open(&url).await.unwrap();
        stores.push(store);
        writers.push(writer);
    }
    let expected = WRITERS * BATCHES * BATCH + BATCHES * 3;
    // The live tail of one replica, read as the events come.
    let mut tail = stores[0].subscribe();
    let tailing = tokio::spawn(async move {
        let mut tailed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while tailed.len() < expected {
            match tokio::time::timeout_at(deadline, tail.recv()).await {
                Ok(Received::Event(event)) => tailed.push(event.seq),
                Ok(Received::Lagged(n)) => panic!("the tail lagged by {n}"),
                Err(_) => panic!("the tail showed {} of {expected}", tailed.len()),
            }
        }
        tailed
    });

    // A reader pages after the last seq it saw, as fast as it can, while
    // the replicas write; a reader that passed an uncommitted seq would
    // never see that event.
    let reader_store = stores[1].clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_done = done.clone();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let finished = reader_done.load(std::sync::atomic::Ordering::SeqCst);
            let page = read_after(&reader_store, after).await;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            let empty = page.is_empty();
            seen.extend(page.into_iter().map(|e| (e.seq, e.id)));
            if finished && empty {
                return seen;
            }
        }
    });

    // Every replica writes the same events too, concurrently: the store
    // keeps one of each.
    let writes = stores.iter().enumerate().map(|(w, store)| async move {
        for b in 0..BATCHES {
            let batch: Vec<Event> = (0..BATCH)
                .map(|i| event("/replicas", &format!("{w}-{b}-{i}")))
                .chain((0..3).map(|i| event("/replicas", &format!("shared-{b}-{i}"))))
                .collect();
            store.write(&batch, Transport::Http).await.unwrap();
        }
    });
    join_all(writes).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();

    let ids: HashSet<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "an event was read twice");
    assert_eq!(
        seen.len(),
        expected,
        "the reader paging by seq missed events"
    );
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));

    // The live tail of one replica shows every replica's events, in seq
    // order, none missing.
    let tailed = tailing.await.unwrap();
    let seqs: Vec<i64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(tailed, seqs);

    drop(stores);
    for writer in writers {
        writer.close().await;
    }
}

/// Two replicas on one database, one of them the transparency log's
/// sequencer; killed, the other takes over and the tree goes on with no
/// gap and no fork.
#[tokio::test]
async fn two_replicas_have_one_sequencer_and_the_other_takes_over_when_it_is_killed() {
    use crate::tlog::{
        logged_process, post_until, run_verify, wait_all_integrated, wait_listening,
    };
    use audit_service::tlog::LogKey;
    use std::sync::atomic::{AtomicBool, Ordering};
    const SEQUENCER: &str = "this replica is the transparency log's sequencer";
    let dir = tempfile::TempDir::new().unwrap();
    let url = test_kit::database::fresh_postgres_database().await;
    let (signer, verifier) = LogKey::generate("audit.test/replicas").unwrap();
    let mut a = logged_process(&url, &signer, dir.path().join("a.log"));
    wait_listening(&a).await;
    let mut b = logged_process(&url, &signer, dir.path().join("b.log"));
    wait_listening(&b).await;
    let db = test_kit::database::Db::open(&url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let to_a = tokio::spawn(post_until(a.port, "ra".into(), stop.clone()));
    let to_b = tokio::spawn(post_until(b.port, "rb".into(), stop.clone()));
    let grown = crate::helpers::within(Duration::from_secs(60), || async {
        db.int("SELECT size FROM log_state").await >= 2000
    })
    .await
    .is_some();
    assert!(grown, "the tree did not grow");
    let holders = [a.log_count(SEQUENCER), b.log_count(SEQUENCER)];
    assert_eq!(
        holders.iter().sum::<usize>(),
        1,
        "one sequencer: {holders:?}"
    );
    let (killed, survivor) = if holders[0] == 1 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    killed.kill();
    let survivor_port = survivor.port;
    // The survivor takes the lease within a second or so, while its
    // clients go on sending.
    let took_over = crate::helpers::within(Duration::from_secs(30), || async {
        survivor.log_count(SEQUENCER) == 1
    })
    .await
    .is_some();
    assert!(
        took_over,
        "the survivor did not take over:\n{}",
        survivor.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = to_a.await.unwrap();
    let _ = to_b.await.unwrap();
    wait_all_integrated(survivor_port, &verifier, &db).await;
    let (ok, output) = run_verify(&url, &signer, None);
    assert!(ok, "{output}");
}
