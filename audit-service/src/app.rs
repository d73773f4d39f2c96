//! Building and running the service: the store, the HTTP server, the broker
//! consumer when configured, and a graceful shutdown of all three that ends
//! within its grace period whatever the clients do.

use crate::config::{ConsumerSettings, Settings};
use crate::http::state::{AppState, Parts};
use crate::store::{Store, WriterHandle};
use crate::{ingest, tlog};
use anyhow::Context;
use axum::Router;
use service_kit::serve::ServeOptions;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long start-up waits for the brokers to create the topics.
const TOPIC_CREATE_TIMEOUT: Duration = Duration::from_secs(5);
pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    serve: ServeOptions,
    store: Store,
    writer: WriterHandle,
    consumer: Option<JoinHandle<()>>,
    sequencer: Option<JoinHandle<()>>,
    replays: JoinHandle<()>,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free port, which
    /// `port()` reports) and, on a broker transport, starts consuming.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (store, writer) = Store::open(&settings.database_url).await?;
        if let ConsumerSettings::Kafka(kafka) = &settings.consumer {
            // Before subscribing: a consumer of a topic that does not exist
            // waits for it, and a fresh cluster has none.
            brokers::kafka::create_topics(
                &kafka.common,
                &[&kafka.common.topic, &kafka.dlq_topic],
                TOPIC_CREATE_TIMEOUT,
            )
            .await;
        }
        let shutdown = CancellationToken::new();
        crate::metrics::describe(settings.transport());
        let (broker, consumer) =
            match ingest::start(&settings, store.clone(), shutdown.clone()).await? {
                Some(consumer) => (Some(consumer.probe), Some(consumer.task)),
                None => (None, None),
            };
        settings.log.announce();
        let sequencer = tlog::sequencer::spawn(
            &settings.log,
            store.clone(),
            &settings.database_url,
            shutdown.clone(),
        );
        let wake = crate::replay::Wake::default();
        let replays = crate::replay::Replays::new(
            store.clone(),
            settings.replay.clone(),
            wake.clone(),
            shutdown.clone(),
        )
        .spawn();
        let state = AppState::new(Parts {
            replays: wake,
            store: store.clone(),
            max_body_bytes: settings.max_body_bytes,
            broker,
            shutdown: shutdown.clone(),
            stream_places: settings.limits.stream_places(),
            log: settings.log.key.clone(),
        });
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("Failed to listen on {}", settings.listen_addr))?;
        let address = listener
            .local_addr()
            .context("Failed to read the bound address")?;
        let serve = settings.listen.options()?;
        settings.access.warn_if_open();
        settings.access.warn_if_plain_http(serve.tls.is_some());
        tracing::info!(%address, scheme = serve.scheme(), transport = settings.transport().as_str(), "audit-service listening");
        let router = crate::http::router(
            state,
            settings.limits.request_timeout,
            settings.access.doors(),
        );
        Ok(Application {
            listener,
            port: address.port(),
            router,
            serve,
            store,
            writer,
            consumer,
            sequencer,
            replays,
            shutdown,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancel it to stop the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting,
    /// lets in-flight requests and the broker batches in hand finish, and
    /// has the store writer commit what they queued.
    ///
    /// Waiting for every connection to end could take for ever: a live-tail
    /// client that stopped reading never lets its response finish, and one
    /// that sent half a request never sends the rest (measured: still
    /// running minutes after SIGTERM). So after `shutdown_grace` the
    /// connections still open are dropped, and so is a broker batch not yet
    /// committed (its records are re-delivered and deduplicated). What a
    /// client got a 2xx for is on disk whatever happens here.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let mut server = Box::pin(service_kit::serve::serve(
            self.listener,
            self.router,
            self.serve,
            shutdown.clone().cancelled_owned(),
        ));
        // The server returns only once told to stop and every connection
        // has closed; until the token is cancelled it is still serving.
        let finished = tokio::select! {
            () = &mut server => true,
            () = shutdown.cancelled() => false,
        };
        shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        let grace_ms = self.shutdown_grace.as_millis() as u64;
        if !finished
            && tokio::time::timeout_at(deadline, &mut server)
                .await
                .is_err()
        {
            tracing::warn!(
                grace_ms,
                "connections still open at the end of the shutdown grace period are dropped"
            );
        }
        drop(server);
        let consumed = match self.consumer {
            None => Ok(()),
            Some(mut consumer) => match tokio::time::timeout_at(deadline, &mut consumer).await {
                Ok(joined) => joined.context("The broker consumer failed"),
                Err(_) => {
                    tracing::warn!(
                        grace_ms,
                        "the broker consumer did not finish within the shutdown grace period; \
                         its uncommitted records will be delivered again"
                    );
                    consumer.abort();
                    Ok(())
                }
            },
        };
        if let Some(sequencer) = self.sequencer {
            // It ends a round in hand at the cancellation; a round cut
            // short commits nothing.
            if tokio::time::timeout_at(deadline, sequencer).await.is_err() {
                tracing::warn!("the sequencer did not stop within the shutdown grace period");
            }
        }
        // Each running replay stores its position and gives its lease back.
        if tokio::time::timeout_at(deadline, self.replays)
            .await
            .is_err()
        {
            tracing::warn!("the replays did not stop within the shutdown grace period");
        }
        drop(self.store);
        self.writer.close().await;
        consumed
    }
}
