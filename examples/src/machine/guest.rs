//! The guest workload: vCPU threads that keep storing to every page of a working set
//! of RAM, optionally capped to a dirty rate, and now and then program a device.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmstate::migrate::GuestControl;
use vmstate::ram::RamBlock;

use super::devices::{Pic, Pit, Serial};

/// What the vCPUs do.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Number of vCPU threads.
    pub vcpus: usize,
    /// Bytes of RAM, from offset 0, that the vCPUs keep rewriting.
    pub working_set: u64,
    /// Cap on pages dirtied per second across all vCPUs, in bytes/s (`None`: no cap).
    pub dirty_rate: Option<u64>,
}

/// The shared state the vCPUs touch.
#[derive(Clone)]
pub struct GuestState {
    /// Guest RAM.
    pub ram: Arc<RamBlock>,
    /// The UART.
    pub serial: Arc<Mutex<Serial>>,
    /// The timer.
    pub pit: Arc<Mutex<Pit>>,
    /// The interrupt controller.
    pub pic: Arc<Mutex<Pic>>,
}

/// Running vCPU threads; implements [`GuestControl`] for the migration driver.
pub struct Vcpus {
    state: GuestState,
    workload: Workload,
    running: Arc<AtomicBool>,
    /// Auto-converge's throttle: the share of time, in percent, the vCPUs sleep.
    throttle: Arc<AtomicU8>,
    threads: Vec<JoinHandle<()>>,
    /// Page writes done so far, all vCPUs together.
    pub writes: Arc<AtomicU64>,
}

impl Vcpus {
    /// Starts the vCPUs.
    pub fn start(state: GuestState, workload: Workload) -> Self {
        let mut v = Vcpus {
            state,
            workload,
            running: Arc::new(AtomicBool::new(false)),
            throttle: Arc::default(),
            threads: Vec::new(),
            writes: Arc::default(),
        };
        v.spawn();
        v
    }

    fn spawn(&mut self) {
        self.running.store(true, Ordering::SeqCst);
        let page = self.state.ram.page_size() as u64;
        let pages = (self.workload.working_set / page).max(1);
        let n = self.workload.vcpus.max(1) as u64;
        for id in 0..n {
            let (state, running, writes) = (
                self.state.clone(),
                self.running.clone(),
                self.writes.clone(),
            );
            let throttle = self.throttle.clone();
            // Each vCPU owns an interleaved share of the working set's pages.
            let per_vcpu_rate = self.workload.dirty_rate.map(|r| (r / page / n).max(1));
            self.threads.push(std::thread::spawn(move || {
                let shared = Shared {
                    state: &state,
                    running: &running,
                    writes: &writes,
                    throttle: &throttle,
                };
                vcpu_loop(id, n, pages, page, per_vcpu_rate, &shared);
            }));
        }
    }

    /// Whether the vCPUs are running.
    pub fn is_running(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Stops the vCPUs and waits for them.
    pub fn halt(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a vCPU thread shares with the others and with the migration.
struct Shared<'a> {
    state: &'a GuestState,
    running: &'a AtomicBool,
    writes: &'a AtomicU64,
    throttle: &'a AtomicU8,
}

fn vcpu_loop(id: u64, n: u64, pages: u64, page: u64, pages_per_sec: Option<u64>, sh: &Shared<'_>) {
    let Shared {
        state,
        running,
        writes,
        throttle,
    } = *sh;
    let start = Instant::now();
    let mut batch_start = Instant::now();
    // When the capped guest's next batch is due, from `start`.
    let mut due = Duration::ZERO;
    let mut done: u64 = 0;
    let mut p = id;
    let mut value = id << 56;
    while running.load(Ordering::Relaxed) {
        value += 1;
        // One store per page: enough to dirty it.
        state
            .ram
            .write_u64(p * page + (value % (page / 8)) * 8, value);
        p += n;
        if p >= pages {
            p = id;
        }
        done += 1;
        if done % 4096 == 0 {
            writes.fetch_add(4096, Ordering::Relaxed);
            if id == 0 {
                let now = start.elapsed().as_nanos() as i64;
                state.serial.lock().unwrap().transmit(value as u8);
                state
                    .pit
                    .lock()
                    .unwrap()
                    .program(value as usize, value as u32, now);
                state.pic.lock().unwrap().raise(value as u8);
            }
            // Throttled to p%, the vCPU runs only (100-p)% of the time: a capped guest
            // dirties at (100-p)% of its cap; an uncapped one sleeps p/(100-p) of the
            // time its batch ran.
            let p = throttle.load(Ordering::Relaxed).min(99) as u32;
            match pages_per_sec {
                Some(rate) => {
                    let effective = rate as f64 * f64::from(100 - p) / 100.0;
                    due += Duration::from_secs_f64(4096.0 / effective);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                None if p > 0 => std::thread::sleep(batch_start.elapsed() * p / (100 - p)),
                None => {}
            }
            batch_start = Instant::now();
        }
    }
}

impl GuestControl for Vcpus {
    fn stop(&mut self) -> vmstate::Result<()> {
        self.halt();
        Ok(())
    }
    fn resume(&mut self) {
        self.spawn();
    }
    fn throttle(&mut self, percent: u8) {
        self.throttle.store(percent, Ordering::Relaxed);
    }
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        self.halt();
    }
}
