//! The signals that ask a service to stop, listened for in this one place.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` when the process receives SIGINT (Ctrl-C) or
/// SIGTERM, logging which. The handlers are installed before this returns,
/// so a signal sent from then on is never missed; call it from inside the
/// runtime, before serving.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    let signals = Signals::install();
    tokio::spawn(async move {
        // Cancels even if this task unwinds, so a signal can never be
        // swallowed by a handler that is no longer listening.
        let _cancel_on_exit = shutdown.clone().drop_guard();
        tokio::select! {
            signal = signals.recv() => tracing::info!(signal, "shutting down"),
            () = shutdown.cancelled() => {}
        }
    });
}

/// SIGINT and SIGTERM, listened for from the moment they are installed. If
/// one cannot be listened for, it never fires (and the failure is logged)
/// rather than stopping the service at once.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(listening) => Some(listening),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for {name}");
                None
            }
        };
        Signals {
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Which of the two came first.
    async fn recv(mut self) -> &'static str {
        async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(self.interrupt.as_mut()) => "SIGINT",
            () = next(self.terminate.as_mut()) => "SIGTERM",
        }
    }
}
