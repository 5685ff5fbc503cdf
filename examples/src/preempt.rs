//! The examples' destinations take a postcopy-preempt channel from the listener that
//! also takes the main connection and, after the migration, the digest's: the
//! acceptor must take only the connection that comes while the load runs.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use vmstate::ram::preempt::PreemptAcceptor;

/// How long the acceptor waits for the source's preempt connection.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The destination's side of a preempt channel on a shared listener.
pub struct PreemptListener {
    done: Arc<AtomicBool>,
    started: Arc<AtomicBool>,
    returned: Receiver<()>,
}

impl PreemptListener {
    /// An acceptor for [`RamHandler::with_postcopy_preempt_incoming`] that polls
    /// `listener` (a clone of the destination's) until a connection comes, the load
    /// ends ([`finish`](Self::finish)) or 30 s pass.
    ///
    /// [`RamHandler::with_postcopy_preempt_incoming`]: vmstate::ram::RamHandler::with_postcopy_preempt_incoming
    pub fn new(listener: &TcpListener) -> std::io::Result<(Self, PreemptAcceptor)> {
        let listener = listener.try_clone()?;
        let done = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let (tx, returned) = channel::<()>();
        let (stop, running) = (done.clone(), started.clone());
        let accept: PreemptAcceptor = Box::new(move || {
            running.store(true, Ordering::Release);
            let result = poll_accept(&listener, &stop, tx);
            Ok(Box::new(result?) as Box<dyn Read + Send>)
        });
        let preempt = PreemptListener {
            done,
            started,
            returned,
        };
        Ok((preempt, accept))
    }

    /// The load ended: the acceptor stops waiting, and this returns once it no longer
    /// touches the listener (so that the caller may accept on it again).
    pub fn finish(self) {
        self.done.store(true, Ordering::Release);
        if self.started.load(Ordering::Acquire) {
            // Disconnected once the acceptor returned.
            let _ = self.returned.recv();
        }
    }
}

fn poll_accept(
    listener: &TcpListener,
    stop: &AtomicBool,
    _returned: Sender<()>,
) -> std::io::Result<std::net::TcpStream> {
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    listener.set_nonblocking(true)?;
    let result = loop {
        match listener.accept() {
            Ok((sock, _)) => break sock.set_nonblocking(false).map(|_| sock),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Acquire) || Instant::now() >= deadline {
                    break Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the source did not open its postcopy-preempt channel",
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => break Err(e),
        }
    };
    listener.set_nonblocking(false)?;
    let sock = result?;
    sock.set_nodelay(true)?;
    Ok(sock)
}

/// Connects the source's side of the preempt channel to `addr`, giving up after 10 s
/// (the guest is still running: the switch waits for this).
pub fn connect(addr: &str) -> std::io::Result<std::net::TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing"))))
}
