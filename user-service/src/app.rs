//! Building the service from its settings and running it until it is told
//! to stop.

use crate::config::Settings;
use crate::hasher::Hasher;
use crate::relay::Relay;
use crate::routes::{self, AppState};
use crate::store::{Scope, Store};
use anyhow::Context;
use axum::Router;
use publishers::Publisher;
use service_kit::auth::Doors;
use service_kit::router::Routes;
use service_kit::serve::ServeOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::openapi::OpenApi;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

/// Requests carry a name and a password; 64 KiB is generous.
const BODY_LIMIT: usize = 64 * 1024;

/// A built service: the listener is bound (so the port is known, which is
/// how tests use port 0), the database is migrated, nothing runs yet.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    serve: ServeOptions,
    relay: Relay,
    publisher: Arc<Publisher>,
    hasher: Hasher,
    outbox_retention: Duration,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // The recorder first: HELP texts go to the recorder installed when
        // they are described.
        service_kit::telemetry::metrics_handle();
        crate::relay::describe_metrics();
        let backend = crate::store::open(&settings.database_url).await?;
        let publisher = Arc::new(Publisher::new(&settings.publish, "user-service").await?);
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let hasher = Hasher::start(settings.hashing.workers, settings.hashing.queue)
            .context("Failed to start the password hashing threads")?;
        let state = AppState {
            store: Store::new(backend.clone(), settings.event_source.clone(), wake.clone()),
            publisher: publisher.clone(),
            hasher: hasher.clone(),
            lag_max: settings.relay.lag_max,
            readiness: settings.readiness,
        };
        let relay = Relay {
            store: backend,
            publisher: publisher.clone(),
            settings: settings.relay.clone(),
            wake,
            shutdown: shutdown.clone(),
            scope: Scope::All,
        };
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("Failed to listen on {}", settings.listen_addr))?;
        let addr = listener
            .local_addr()
            .context("Failed to read the bound address")?;
        settings.access.warn_if_open();
        Ok(Application {
            listener,
            addr,
            router: router(state, settings.request_timeout, settings.access.doors()),
            serve: settings.listen.options()?,
            relay,
            publisher,
            hasher,
            outbox_retention: settings.outbox_retention,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The password hashing pool (tests read how much memory it took).
    pub fn hasher(&self) -> Hasher {
        self.hasher.clone()
    }

    /// Cancelling this token stops the service as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled: stops accepting,
    /// lets in-flight requests finish, stops the relay after its in-flight
    /// publish, then flushes the producer. Events still pending stay in the
    /// outbox for the next start.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(
            address = %self.addr,
            scheme = self.serve.scheme(),
            events = %self.publisher.describe(),
            "user-service listening"
        );
        let retention = tokio::spawn(crate::retention::run(
            self.relay.store.clone(),
            self.outbox_retention,
            self.shutdown.clone(),
        ));
        let relay = tokio::spawn(self.relay.run());
        service_kit::serve::serve(
            self.listener,
            self.router,
            self.serve,
            self.shutdown.clone().cancelled_owned(),
        )
        .await;
        // However the server ended, the relay goes too.
        self.shutdown.cancel();
        let relayed = relay.await;
        self.publisher.flush().await;
        if let Err(e) = retention.await {
            tracing::error!(error = %e, "outbox retention task failed");
        }
        tracing::info!("user-service stopped");
        // A relay that died or failed (it cancels the token as it ends,
        // which is what stopped the server) is an error: exiting non-zero
        // gets the service restarted instead of serving with events piling
        // up.
        relayed
            .context("The outbox relay panicked")?
            .context("The outbox relay failed")
    }
}

/// The OpenAPI 3.1 document of the service's HTTP API, generated from the
/// handlers' annotations; served at `GET /openapi.json`.
pub fn openapi() -> OpenApi {
    api_routes().doc
}

#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "user-service",
    description = "Users over HTTP. Every change is committed together with its CloudEvent \
                   (user.storeUser, user.updateUser, user.deleteUser) and delivered to the \
                   audit service by an outbox relay. Errors are application/problem+json (RFC 9457)."
))]
struct ApiDoc;

/// The documented routes (the API, then the operational ones) and their
/// document.
fn api_routes() -> Routes<AppState> {
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::users::router())
        .merge(routes::health::router())
        .split_for_parts();
    // Before the probes join: they are outside the request timeout.
    service_kit::router::document_timeout(&mut doc);
    let (ops, ops_doc) = service_kit::telemetry::ops_router().split_for_parts();
    doc.merge(ops_doc);
    crate::access::document(&mut doc);
    Routes { api, ops, doc }
}

/// Every route behind `doors` and the service stack
/// (`service_kit::router`), with the API's body limit.
fn router(state: AppState, request_timeout: Duration, doors: Doors) -> Router {
    let mut routes = api_routes();
    routes.api = routes.api.layer(RequestBodyLimitLayer::new(BODY_LIMIT));
    service_kit::router::router(routes, state, request_timeout, doors)
}
