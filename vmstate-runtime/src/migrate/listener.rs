//! The source's side of the return path: a thread that reads the destination's
//! messages while the stream is written, as QEMU's `source_return_path_thread`.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError, channel};
use std::time::{Duration, Instant};

use super::return_path::{Message, read_message};
use crate::error::{Error, ErrorKind, Result};
use crate::ram::postcopy::PageRequests;
use crate::transport::is_timeout;

/// What the reading thread saw.
enum Event {
    Message(Message),
    /// The connection ended cleanly between messages.
    Closed,
    /// Reading failed.
    Failed(Error),
}

/// What the destination has said so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Heard {
    /// The answer to the first PING.
    pub pong: bool,
    /// SWITCHOVER_ACK arrived.
    pub switchover_ack: bool,
    /// The value of the last PONG, and when it arrived.
    pub last_pong: u32,
    pub last_pong_at: Option<Instant>,
}

/// The return path's reader thread and what it reported.
pub(crate) struct Listener {
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    heard: Heard,
}

impl Listener {
    /// Starts reading `from` in a thread. A read timeout on `from` only makes the
    /// thread look at its stop flag; timeouts are judged by [`wait_shut`](Self::wait_shut).
    /// Postcopy page requests go straight into `requests` from that thread (so that
    /// the sender sees them between two pages); without it they are an error.
    pub fn spawn(
        mut from: impl Read + Send + 'static,
        requests: Option<Arc<PageRequests>>,
    ) -> Result<Listener> {
        let (tx, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("return-path".into())
            .spawn(move || {
                loop {
                    let event = match read_message(&mut from) {
                        Ok(Some(Message::ReqPagesId { block, start, len }))
                            if let Some(q) = &requests =>
                        {
                            match q.push(Some(&block), start, u64::from(len)) {
                                Ok(()) => continue,
                                Err(e) => Event::Failed(e),
                            }
                        }
                        Ok(Some(Message::ReqPages { start, len })) if let Some(q) = &requests => {
                            match q.push(None, start, u64::from(len)) {
                                Ok(()) => continue,
                                Err(e) => Event::Failed(e),
                            }
                        }
                        Ok(Some(m)) => {
                            if let (Message::Shut { .. }, Some(q)) = (&m, &requests) {
                                q.close_preempt(); // the destination reads it no more
                            }
                            Event::Message(m)
                        }
                        Ok(None) => Event::Closed,
                        Err(e) if matches!(e.kind(), ErrorKind::Io(io) if is_timeout(io)) => {
                            if stopped.load(Ordering::Relaxed) {
                                if let Some(q) = &requests {
                                    q.close_preempt();
                                }
                                return;
                            }
                            continue;
                        }
                        Err(e) => Event::Failed(e),
                    };
                    let last = !matches!(event, Event::Message(_));
                    if tx.send(event).is_err() || last {
                        if let Some(q) = &requests {
                            q.close_preempt();
                        }
                        return;
                    }
                }
            })?;
        Ok(Listener {
            events,
            stop,
            heard: Heard::default(),
        })
    }

    /// What has been heard so far.
    pub fn heard(&self) -> &Heard {
        &self.heard
    }

    /// Takes in what arrived without waiting. An error when the destination already
    /// gave up: it reported a failure, or the return path broke.
    pub fn poll(&mut self) -> Result<()> {
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    self.take(event, false)?;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(closed_early()),
            }
        }
    }

    /// Waits up to `limit` for something to arrive (to pace a source that has nothing
    /// to send while it waits for SWITCHOVER_ACK).
    pub fn wait_a_little(&mut self, limit: Duration) -> Result<()> {
        match self.events.recv_timeout(limit) {
            Ok(event) => self.take(event, false).map(|_| ()),
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => Err(closed_early()),
        }
    }

    /// Waits for the destination's first PONG (or an earlier error).
    pub fn wait_pong(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        while !self.heard.pong {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(Error::invalid(
                    "return path",
                    format!(
                        "the destination did not answer PING within the I/O timeout of {:?}",
                        timeout.unwrap_or_default()
                    ),
                ));
            }
            self.wait_a_little(
                left.unwrap_or(Duration::from_secs(3600))
                    .min(Duration::from_millis(100)),
            )?;
        }
        Ok(())
    }

    /// Waits for the destination's SHUT; `Ok` only for `SHUT(0)`: it loaded the whole
    /// stream and runs the guest.
    pub fn wait_shut(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let event = match deadline {
                None => self.events.recv().map_err(|_| closed_early())?,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    match self.events.recv_timeout(left) {
                        Ok(e) => e,
                        Err(RecvTimeoutError::Timeout) => {
                            return Err(Error::invalid(
                                "return path",
                                format!(
                                    "the destination did not report within the I/O timeout \
                                     of {:?}",
                                    timeout.unwrap_or_default()
                                ),
                            ));
                        }
                        Err(RecvTimeoutError::Disconnected) => return Err(closed_early()),
                    }
                }
            };
            if self.take(event, true)? {
                return Ok(());
            }
        }
    }

    /// Records one event; `Ok(true)` for `SHUT(0)`.
    fn take(&mut self, event: Event, at_end: bool) -> Result<bool> {
        match event {
            Event::Message(Message::Pong(v)) => {
                self.heard.pong = true;
                self.heard.last_pong = v;
                self.heard.last_pong_at = Some(Instant::now());
            }
            Event::Message(Message::SwitchoverAck) => self.heard.switchover_ack = true,
            Event::Message(Message::Shut { failed: false }) if at_end => return Ok(true),
            Event::Message(Message::Shut { failed: false }) => {
                return Err(Error::invalid(
                    "return path",
                    "the destination reported success (SHUT 0) before the stream ended",
                ));
            }
            Event::Message(Message::Shut { failed: true }) => {
                return Err(Error::invalid(
                    "return path",
                    "the destination reported that its load failed (SHUT 1)",
                ));
            }
            Event::Message(Message::ReqPagesId { .. } | Message::ReqPages { .. }) => {
                return Err(Error::invalid(
                    "return path",
                    "a page request (postcopy) in a precopy migration",
                ));
            }
            Event::Message(Message::Other { kind, .. }) => {
                return Err(Error::invalid(
                    "return path",
                    format!(
                        "message type {kind} (postcopy recovery), which this side does not support"
                    ),
                ));
            }
            Event::Closed => return Err(closed_early()),
            Event::Failed(e) => return Err(e.in_record("return path")),
        }
        Ok(false)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn closed_early() -> Error {
    Error::invalid(
        "return path",
        "the connection closed before the destination reported",
    )
}
