//! A TCP proxy between a migration's source and destination that cuts the connection
//! at a chosen point, with a reset on both sides (SO_LINGER 0), as a link that dies.
//!
//! Where to cut is decided while the stream flows: at an absolute offset of the
//! source's stream, at an offset relative to the start of a record found by its bytes
//! (a device section's header, the trailer), or inside the destination's SHUT message
//! on the return path.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where to cut.
#[derive(Debug, Clone)]
pub enum Cut {
    /// Never (a calibration run).
    Never,
    /// After this many bytes of the source's stream were forwarded.
    At(u64),
    /// `plus` bytes after the first occurrence of `pattern` at or after offset `from`
    /// (held back until the pattern is seen).
    AfterPattern {
        pattern: Vec<u8>,
        from: u64,
        plus: u64,
    },
    /// On the return path, after `bytes` bytes of the destination's SHUT message.
    InShut { bytes: usize },
    /// Forward this many bytes of the stream, then hold the rest (no cut).
    Hold(u64),
    /// Forward the whole stream but hold back the destination's SHUT (no cut).
    HoldShut,
}

/// The shared state of one proxied connection.
pub struct Proxy {
    pub addr: SocketAddr,
    plan: Arc<Mutex<Cut>>,
    /// Every byte the source sent (forwarded or not).
    pub stream: Arc<Mutex<Vec<u8>>>,
    /// Bytes forwarded to the destination.
    pub forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    /// The destination's SHUT arrived and is held back.
    pub held_shut: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    accept: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

const POLL: Duration = Duration::from_millis(5);

impl Proxy {
    /// Listens on a free port and forwards one connection to `to`.
    pub fn start(to: SocketAddr, plan: Cut) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let plan = Arc::new(Mutex::new(plan));
        let stream = Arc::new(Mutex::new(Vec::new()));
        let forwarded = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let (p, s, f, c) = (plan.clone(), stream.clone(), forwarded.clone(), cut.clone());
        let held_shut = Arc::new(AtomicBool::new(false));
        let h = held_shut.clone();
        let accept = std::thread::spawn(move || {
            let (src, _) = l.accept().unwrap();
            let dst = TcpStream::connect(to).unwrap();
            for sock in [&src, &dst] {
                sock.set_nodelay(true).unwrap();
                sock.set_read_timeout(Some(POLL)).unwrap();
                // A close sends a reset, never a FIN: the link dies, nobody "closed".
                socket2::SockRef::from(sock)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            let down = {
                let (from, to) = (src.try_clone().unwrap(), dst.try_clone().unwrap());
                let (p, s, f, c) = (p.clone(), s.clone(), f.clone(), c.clone());
                std::thread::spawn(move || forward_stream(from, to, &p, &s, &f, &c))
            };
            let up = std::thread::spawn(move || forward_return_path(dst, src, &p, &c, &h));
            vec![down, up]
        });
        Proxy {
            addr,
            plan,
            stream,
            forwarded,
            cut,
            held_shut,
            threads: Vec::new(),
            accept: Some(accept),
        }
    }

    /// Changes the plan (from the source's progress callback).
    pub fn set_plan(&self, plan: Cut) {
        *self.plan.lock().unwrap() = plan;
    }

    /// A handle to change the plan from another thread.
    pub fn planner(&self) -> Arc<Mutex<Cut>> {
        self.plan.clone()
    }

    /// Whether the proxy cut the connection.
    pub fn did_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Waits for the forwarding threads to end.
    pub fn join(mut self) {
        if let Some(a) = self.accept.take() {
            self.threads = a.join().unwrap();
        }
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Source to destination: forwards until the plan says cut.
fn forward_stream(
    mut from: TcpStream,
    mut to: TcpStream,
    plan: &Mutex<Cut>,
    seen: &Mutex<Vec<u8>>,
    forwarded: &AtomicU64,
    cut: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut eof = false;
    loop {
        if cut.load(Ordering::SeqCst) {
            return; // dropping both sockets resets them
        }
        if !eof {
            match from.read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => seen.lock().unwrap().extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    cut.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
        // How far may the destination get?
        let all = seen.lock().unwrap();
        let done = forwarded.load(Ordering::SeqCst);
        let (limit, cut_here) = match &*plan.lock().unwrap() {
            Cut::At(at) => ((*at).min(all.len() as u64), *at <= all.len() as u64),
            Cut::AfterPattern {
                pattern,
                from,
                plus,
            } => {
                let start = (*from as usize).min(all.len());
                match find(&all[start..], pattern) {
                    Some(i) => {
                        let at = (start + i) as u64 + plus;
                        (at.min(all.len() as u64), at <= all.len() as u64)
                    }
                    // Bytes that cannot begin the pattern may go.
                    None => (
                        (all.len() + 1).saturating_sub(pattern.len()).max(start) as u64,
                        false,
                    ),
                }
            }
            Cut::Hold(at) => ((*at).min(all.len() as u64), false),
            Cut::Never | Cut::InShut { .. } | Cut::HoldShut => (all.len() as u64, false),
        };
        if limit > done {
            let chunk = all[done as usize..limit as usize].to_vec();
            drop(all);
            if to.write_all(&chunk).is_err() {
                cut.store(true, Ordering::SeqCst);
                return;
            }
            forwarded.store(limit, Ordering::SeqCst);
        } else {
            drop(all);
        }
        if cut_here {
            cut.store(true, Ordering::SeqCst);
            return;
        }
        if eof {
            // The source closed its side: pass the close on if everything went through;
            // what the plan holds back will never go.
            if forwarded.load(Ordering::SeqCst) == seen.lock().unwrap().len() as u64 {
                let _ = to.shutdown(std::net::Shutdown::Write);
            }
            return;
        }
    }
}

/// Destination to source: forwards the return path, cutting inside SHUT if planned.
fn forward_return_path(
    mut from: TcpStream,
    mut to: TcpStream,
    plan: &Mutex<Cut>,
    cut: &AtomicBool,
    held_shut: &AtomicBool,
) {
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new(); // return-path bytes not yet forwarded
    loop {
        if cut.load(Ordering::SeqCst) {
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                cut.store(true, Ordering::SeqCst);
                return;
            }
        }
        // Forward whole messages; stop inside SHUT when planned.
        while pending.len() >= 4 {
            let len = u16::from_be_bytes([pending[2], pending[3]]) as usize;
            let is_shut = pending[..2] == [0, 1];
            match (is_shut, &*plan.lock().unwrap()) {
                (true, Cut::InShut { bytes }) => {
                    let _ = to.write_all(&pending[..(*bytes).min(pending.len())]);
                    cut.store(true, Ordering::SeqCst);
                    return;
                }
                (true, Cut::HoldShut) => {
                    held_shut.store(true, Ordering::SeqCst);
                    break;
                }
                _ => {}
            }
            if pending.len() < 4 + len {
                break;
            }
            if to.write_all(&pending[..4 + len]).is_err() {
                cut.store(true, Ordering::SeqCst);
                return;
            }
            pending.drain(..4 + len);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
