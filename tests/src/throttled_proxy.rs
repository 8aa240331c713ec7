//! A TCP proxy on 127.0.0.1 that passes requests through at once and answers at a fixed rate,
//! so a pull through it is slow the way a pull over a poor uplink is.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes a step of the throttled direction carries.
const CHUNK: usize = 16 * 1024;

/// Forwards connections to a target until dropped.
#[derive(Debug)]
pub struct ThrottledProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl ThrottledProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`, sending what `target`
    /// answers at `bytes_per_second`.
    pub fn start(target: SocketAddr, bytes_per_second: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(client_reader), Ok(upstream_writer)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || copy(client_reader, upstream_writer, None));
                let stopping = stopping.clone();
                std::thread::spawn(move || {
                    copy(upstream, client, Some((bytes_per_second, stopping)));
                });
            }
        });
        Self { addr, stop }
    }

    /// `127.0.0.1:<port>`, as an image reference's registry part.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for ThrottledProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either side closes; with a rate, no faster than it (and not at
/// all once `stop` is set).
fn copy(mut from: TcpStream, mut to: TcpStream, rate: Option<(usize, Arc<AtomicBool>)>) {
    let started = Instant::now();
    let mut sent = 0usize;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((bytes_per_second, stop)) = &rate {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let due = Duration::from_secs_f64(sent as f64 / *bytes_per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to.shutdown(Shutdown::Write);
}
