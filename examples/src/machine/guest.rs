//! The guest workload: vCPU threads that keep storing to every page of a working set
//! of RAM, optionally capped to a dirty rate, and now and then program a device.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
            // Each vCPU owns an interleaved share of the working set's pages.
            let per_vcpu_rate = self.workload.dirty_rate.map(|r| (r / page / n).max(1));
            self.threads.push(std::thread::spawn(move || {
                vcpu_loop(id, n, pages, page, per_vcpu_rate, &state, &running, &writes);
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

#[allow(clippy::too_many_arguments)]
fn vcpu_loop(
    id: u64,
    n: u64,
    pages: u64,
    page: u64,
    pages_per_sec: Option<u64>,
    state: &GuestState,
    running: &AtomicBool,
    writes: &AtomicU64,
) {
    let start = Instant::now();
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
            if let Some(rate) = pages_per_sec {
                let due = Duration::from_secs_f64(done as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
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
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        self.halt();
    }
}
