//! Serving a scoring API's router over TCP: one request thread per core, each with a
//! single-threaded runtime of its own, fed connections by the runtime that started it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use axum::Router;

/// A scoring API being served. Connections are accepted on the runtime that started it and
/// handed in turn to request threads, one per core, each running a single-threaded runtime of
/// its own: a request is read, scored and answered on one thread, with no work stealing and no
/// hand-off between threads (nginx's worker model). Each connection answers as soon as a
/// response is written (`TCP_NODELAY`: a small response must not wait for the client's delayed
/// ACK of the previous one).
#[derive(Debug)]
pub struct ScoringServer {
    stop: watch::Sender<Stop>,
    acceptor: tokio::task::JoinHandle<()>,
    threads: Vec<oneshot::Receiver<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Serving,
    /// Stop accepting; answer the requests in flight.
    Drain,
    /// Close every connection now.
    Now,
}

impl ScoringServer {
    /// Starts serving on `listener` from as many request threads as the process may use cores,
    /// each serving the router `router()` makes on its thread's runtime. Must be called within
    /// a tokio runtime (the acceptor runs there).
    pub fn start(
        listener: tokio::net::TcpListener,
        router: impl Fn() -> Router + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let router = Arc::new(router);
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (stop, _) = watch::channel(Stop::Serving);
        let mut connections = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let (done, finished) = oneshot::channel();
            let (router, stop) = (router.clone(), stop.subscribe());
            std::thread::Builder::new()
                .name(format!("scoring-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        request_thread(Connections(rx), router(), stop).await;
                    });
                    // Closes the connections still open before the thread counts as gone.
                    drop(runtime);
                    let _ = done.send(());
                })?;
            connections.push(tx);
            threads.push(finished);
        }
        let acceptor = tokio::spawn(accept(listener, connections, stop.subscribe()));
        Ok(Self {
            stop,
            acceptor,
            threads,
        })
    }

    /// Stops accepting and lets the requests in flight finish for up to `grace`, then closes
    /// every connection; returns once the listener and every request thread are gone.
    pub async fn stop(self, grace: std::time::Duration) {
        let _ = self.stop.send(Stop::Drain);
        let _ = self.acceptor.await;
        let mut threads = futures_util::future::join_all(self.threads);
        if tokio::time::timeout(grace, &mut threads).await.is_err() {
            let _ = self.stop.send(Stop::Now);
            threads.await;
        }
    }
}

/// Accepts connections and hands them to the request threads in turn until told to stop.
async fn accept(
    listener: tokio::net::TcpListener,
    threads: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s != Stop::Serving) => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors or the like: retry shortly instead of spinning.
                tracing::warn!(error = %e, "scoring API cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        match tcp.into_std() {
            Ok(tcp) => {
                let _ = threads[next].send(tcp);
                next = (next + 1) % threads.len();
            }
            Err(e) => tracing::warn!(error = %e, "scoring API connection dropped"),
        }
    }
}

/// One request thread: serves the connections it is handed until told to stop.
async fn request_thread(connections: Connections, router: Router, mut stop: watch::Receiver<Stop>) {
    let mut now = stop.clone();
    let drain = async move {
        let _ = stop.wait_for(|s| *s != Stop::Serving).await;
    };
    tokio::select! {
        result = axum::serve(connections, router).with_graceful_shutdown(drain) => {
            if let Err(e) = result {
                tracing::error!(error = %e, "scoring API stopped");
            }
        }
        _ = now.wait_for(|s| *s == Stop::Now) => {}
    }
}

/// The connections handed to one request thread, as a listener axum serves.
struct Connections(mpsc::UnboundedReceiver<std::net::TcpStream>);

impl axum::serve::Listener for Connections {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(tcp) = self.0.recv().await else {
                // The acceptor is gone: nothing more comes (shutdown ends the serve loop).
                return std::future::pending().await;
            };
            let registered = tcp
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(tcp));
            match registered.and_then(|tcp| Ok((tcp.peer_addr()?, tcp))) {
                Ok((addr, tcp)) => return (tcp, addr),
                Err(e) => tracing::debug!(error = %e, "scoring API connection dropped"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}
