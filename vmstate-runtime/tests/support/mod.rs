//! A guest for migration-failure tests: a vCPU thread writes RAM and a device and
//! mirrors every write into a private copy, so that after any failed migration the
//! source's state can be checked page by page and field by field against the copy.
#![allow(dead_code)] // each test file uses part of it

pub mod proxy;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmstate::migrate::{GuestControl, IncomingParams, MigrationParams, receive};
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::{Registration, Registry, VmState};

pub const MACHINE: &str = "faults-test-1.0";
pub const PAGE: u64 = 4096;

/// A device the vCPU programs now and then.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "timer-dev", version = 2)]
pub struct TimerDev {
    pub count: u64,
    pub regs: [u32; 8],
    pub log_len: u32,
    #[vmstate(len = log_len)]
    pub log: Vec<u8>,
}

impl TimerDev {
    fn tick(&mut self, x: u64) {
        self.count += 1;
        self.regs[(x % 8) as usize] = x as u32;
        if self.log.len() < 64 {
            self.log.push(x as u8);
            self.log_len += 1;
        }
    }
}

/// A device the guest does not touch during the tests.
#[derive(VmState, Debug, Clone, PartialEq)]
#[vmstate(name = "uart-dev")]
pub struct UartDev {
    pub lcr: u8,
    pub fifo: [u8; 16],
    pub baud: u32,
}

impl Default for UartDev {
    fn default() -> Self {
        UartDev {
            lcr: 3,
            fifo: *b"migrate me, fast",
            baud: 115_200,
        }
    }
}

/// What the vCPU thread keeps: the copy of every word and of the device it wrote.
struct Shadow {
    words: Vec<u64>,
    dev: TimerDev,
    x: u64,
}

/// The source's guest.
pub struct ShadowGuest {
    pub ram: Arc<RamBlock>,
    pub dev: Arc<Mutex<TimerDev>>,
    pub uart: Arc<Mutex<UartDev>>,
    pages: u64,
    working_set: u64,
    running: Arc<AtomicBool>,
    pub writes: Arc<AtomicU64>,
    vcpu: Option<JoinHandle<Shadow>>,
    shadow: Option<Shadow>,
    pub stops: u32,
    pub resumes: u32,
}

impl ShadowGuest {
    /// `pages` of RAM filled with a pattern; the vCPU rewrites the first `working_set`
    /// pages. Started, and waits until the vCPU has written.
    pub fn new(pages: u64, working_set: u64, seed: u64) -> Self {
        let ram = Arc::new(RamBlock::new("ram0", pages * PAGE).unwrap());
        let mut words = vec![0u64; (pages * PAGE / 8) as usize];
        // Three pages in four hold data, the rest stay zero (both kinds of records).
        for (i, w) in words.iter_mut().enumerate() {
            if (i / 512) % 4 != 3 {
                *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
                ram.write_u64(i as u64 * 8, *w);
            }
        }
        let mut g = ShadowGuest {
            ram,
            dev: Arc::default(),
            uart: Arc::default(),
            pages,
            working_set,
            running: Arc::default(),
            writes: Arc::default(),
            vcpu: None,
            shadow: Some(Shadow {
                words,
                dev: TimerDev::default(),
                x: seed | 1,
            }),
            stops: 0,
            resumes: 0,
        };
        g.start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while g.writes.load(Ordering::Relaxed) < 1000 {
            assert!(Instant::now() < deadline, "the vCPU thread never ran");
            std::thread::yield_now();
        }
        g
    }

    fn start(&mut self) {
        let mut shadow = self.shadow.take().expect("the guest is stopped");
        self.running.store(true, Ordering::SeqCst);
        let (ram, dev, running, writes) = (
            self.ram.clone(),
            self.dev.clone(),
            self.running.clone(),
            self.writes.clone(),
        );
        let ws = self.working_set;
        self.vcpu = Some(std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let x = &mut shadow.x;
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                let word = (*x % ws) * 512 + (*x >> 32) % 512;
                ram.write_u64(word * 8, *x);
                shadow.words[word as usize] = *x;
                let n = writes.fetch_add(1, Ordering::Relaxed);
                if n % 512 == 0 {
                    dev.lock().unwrap().tick(*x);
                    shadow.dev.tick(*x);
                }
            }
            shadow
        }));
    }

    fn halt(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(h) = self.vcpu.take() {
            self.shadow = Some(h.join().unwrap());
        }
    }

    pub fn is_running(&self) -> bool {
        self.vcpu.is_some()
    }

    /// Stops the vCPU and compares RAM and device with the copy: the pages that differ
    /// and whether the device differs.
    pub fn check_intact(&mut self) -> (Vec<u64>, bool) {
        self.halt();
        let shadow = self.shadow.as_ref().unwrap();
        let mut bad = Vec::new();
        let mut page = vec![0u8; PAGE as usize];
        for p in 0..self.pages {
            self.ram.read(p * PAGE, &mut page);
            let want = &shadow.words[(p * 512) as usize..((p + 1) * 512) as usize];
            let same = page
                .chunks_exact(8)
                .zip(want)
                .all(|(b, w)| u64::from_ne_bytes(b.try_into().unwrap()) == *w);
            if !same {
                bad.push(p);
            }
        }
        let dev_differs = *self.dev.lock().unwrap() != shadow.dev
            || *self.uart.lock().unwrap() != UartDev::default();
        (bad, dev_differs)
    }

    /// The source registry and parameters for migrating this guest.
    pub fn source(&self) -> (Registry, MigrationParams) {
        self.source_with(|h| h)
    }

    /// [`source`](Self::source) with the RAM handler set up by `setup`.
    #[allow(dead_code)] // not every test binary uses it
    pub fn source_with(
        &self,
        setup: impl FnOnce(RamHandler) -> RamHandler,
    ) -> (Registry, MigrationParams) {
        let mut reg = Registry::new();
        let handler = setup(RamHandler::new(vec![self.ram.clone()]).unwrap());
        let mut params = MigrationParams::new(MACHINE);
        params.ram_stats = Some(handler.stats());
        reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
            .unwrap();
        reg.register_device(self.dev.clone(), Registration::new())
            .unwrap();
        reg.register_device(self.uart.clone(), Registration::new())
            .unwrap();
        (reg, params)
    }
}

impl GuestControl for ShadowGuest {
    fn stop(&mut self) -> vmstate::Result<()> {
        self.stops += 1;
        self.halt();
        Ok(())
    }
    fn resume(&mut self) {
        self.resumes += 1;
        self.start();
    }
}

impl Drop for ShadowGuest {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What an in-process destination ended with.
pub struct Landed {
    pub result: vmstate::Result<vmstate::stream::LoadReport>,
    /// Whether the destination started its guest.
    pub started: bool,
    pub ram: Arc<RamBlock>,
    pub dev: Arc<Mutex<TimerDev>>,
}

/// A destination thread receiving one migration on `listener`.
pub fn destination(
    listener: TcpListener,
    pages: u64,
    params: IncomingParams,
) -> JoinHandle<Landed> {
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        receive_on(sock, pages, params)
    })
}

/// Receives one migration on `conn` into a fresh machine of `pages` pages.
pub fn receive_on<C: vmstate::transport::Connection>(
    conn: C,
    pages: u64,
    params: IncomingParams,
) -> Landed {
    receive_on_with(conn, pages, params, |_| {})
}

/// [`receive_on`], with more entries registered by `extra`.
pub fn receive_on_with<C: vmstate::transport::Connection>(
    conn: C,
    pages: u64,
    params: IncomingParams,
    extra: impl FnOnce(&mut Registry),
) -> Landed {
    let ram = Arc::new(RamBlock::new("ram0", pages * PAGE).unwrap());
    let dev = Arc::new(Mutex::new(TimerDev::default()));
    let mut reg = ram_registry(ram.clone());
    reg.register_device(dev.clone(), Registration::new())
        .unwrap();
    let uart = Arc::new(Mutex::new(UartDev {
        lcr: 0,
        fifo: [0; 16],
        baud: 0,
    }));
    reg.register_device(uart.clone(), Registration::new())
        .unwrap();
    extra(&mut reg);
    let mut started = false;
    let result = receive(&mut reg, conn, &params, &mut || {
        started = true;
        Ok(())
    });
    Landed {
        result,
        started,
        ram,
        dev,
    }
}

/// A registry with `ram` as the `ram` iterative handler's only block.
pub fn ram_registry(ram: Arc<RamBlock>) -> Registry {
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![ram]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg
}

/// Whether two RAM blocks hold the same bytes.
pub fn same_ram(a: &RamBlock, b: &RamBlock) -> bool {
    (0..a.pages()).all(|p| a.page_checksum(p) == b.page_checksum(p))
}

/// A listener on a free loopback port.
pub fn listen() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Connects to `addr`.
pub fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}

/// Migrates `guest` over a new TCP connection to `addr` with `migrate_over` (and the
/// return path it opens).
#[allow(dead_code)] // not every test binary uses it
pub fn migrate_to(
    reg: &mut Registry,
    addr: std::net::SocketAddr,
    guest: &mut ShadowGuest,
    params: &MigrationParams,
) -> vmstate::Result<vmstate::migrate::MigrationStats> {
    vmstate::migrate::migrate_over(
        reg,
        connect(addr),
        guest,
        params,
        &vmstate::migrate::CancelToken::new(),
        &mut |_| {},
    )
}
