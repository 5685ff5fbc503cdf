//! A minimal KVM virtual machine: one or more vCPUs running a program of its own in
//! 32-bit protected mode, its memory a [`RamBlock`] registered as a KVM memory slot
//! ([`KvmRam`], with KVM's dirty log feeding the migration), its vCPU state, its
//! in-kernel interrupt controllers and its console described with `#[derive(VmState)]`
//! and saved as device sections.
//!
//! The guest ([`guest_image`]) stores a pass counter into the first word of every
//! page of its working set, pass after pass, and reports each finished pass on I/O port
//! [`PORT_PASS`]; the VMM turns each report into a console line. With several vCPUs,
//! each runs its own copy of the program over its own slice of the working set. A
//! destination that loads the RAM, the vCPU state, the chipset and the consoles resumes
//! the guest where it stopped: the next pass each vCPU reports is the one after the
//! last it reported on the source.
//!
//! Stopping: the vCPU threads are asked with a flag and kicked out of `KVM_RUN` with a
//! signal ([`KICK_SIGNAL`]), so a vCPU stops within microseconds wherever the guest is,
//! even halted inside the kernel.

pub mod chipset;
pub mod cpu;
pub mod live;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};
use vmstate::migrate::GuestControl;
use vmstate::ram::{KvmRam, RAM_VERSION, RamBlock, RamHandler, RamStats};
use vmstate::{Registration, Registry, VmState};

pub use chipset::Chipset;
pub use cpu::CpuState;

/// The machine type name written in the stream's configuration section.
pub const MACHINE_TYPE: &str = "vmstate-kvm-demo-1.0";
/// Where the guest image (a 32-byte multiboot header, then the program) is loaded.
pub const IMAGE_ADDR: u64 = 0x10_0000;
/// The program's first instruction, right after the header (vCPU 0's entry; see
/// [`vcpu_entry`]).
pub const ENTRY: u64 = IMAGE_ADDR + 32;
/// Where the working set starts (2 MiB).
pub const WORKING_SET_BASE: u64 = 0x20_0000;
/// The port the guest reports each finished pass on (the pass number, 32 bits).
pub const PORT_PASS: u16 = 0x80;
/// The port the guest reports its position on every 4096 pages (pages left).
pub const PORT_PROGRESS: u16 = 0x81;
/// What the guest reports on [`PORT_PASS`] once a [`Workload::Fill`] is done.
pub const FILLED: u32 = u32::MAX;

/// What the guest program does with its working set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Store the pass number into the first word of each of `pages` pages, pass after
    /// pass, reporting each finished pass.
    Rewrite {
        /// Pages in the working set.
        pages: u32,
    },
    /// Fill `pages` pages with pseudo-random words (xorshift32 from `seed`), report
    /// [`FILLED`], then spin reporting nothing new: a guest to pause and migrate.
    Fill {
        /// Pages to fill.
        pages: u32,
        /// The generator's seed (not 0).
        seed: u32,
    },
    /// The same pseudo-random words as [`Workload::Fill`], but placed in memory by the
    /// VMM before the guest starts ([`preload`]; QEMU: `-device loader`); the guest
    /// only writes [`FILLED`] just below the working set, reports it, and spins. A
    /// paused guest with random memory, on machines where filling it from inside the
    /// guest is slow.
    Preloaded {
        /// Pages of random words.
        pages: u32,
        /// The generator's seed (not 0).
        seed: u32,
    },
}

impl Workload {
    /// Pages the workload touches.
    pub fn pages(&self) -> u32 {
        match *self {
            Workload::Rewrite { pages }
            | Workload::Fill { pages, .. }
            | Workload::Preloaded { pages, .. } => pages,
        }
    }
}

/// The guest image for `workload`: a multiboot (version 1) header, so that QEMU's
/// `-kernel` loads and enters it exactly as this VMM does (at [`ENTRY`], in flat 32-bit
/// protected mode, paging off), then the program, assembled by hand. The rewrite
/// program (offsets from [`ENTRY`]):
///
/// ```text
///  0: 31 db              xor  ebx, ebx            ; pass = 0
///  2: 43                 inc  ebx                 ; next pass
///  3: bf <base>          mov  edi, WORKING_SET_BASE
///  8: b9 <pages>         mov  ecx, pages
/// 13: 89 1f              mov  [edi], ebx          ; the counter into this page
/// 15: 81 c7 00 10 00 00  add  edi, 4096
/// 21: 49                 dec  ecx
/// 22: 74 0e              jz   38                  ; pass finished
/// 24: f7 c1 ff 0f 00 00  test ecx, 0xfff
/// 30: 75 ed              jnz  13
/// 32: 89 c8              mov  eax, ecx            ; every 4096 pages: pages left
/// 34: e7 81              out  PORT_PROGRESS, eax
/// 36: eb e7              jmp  13
/// 38: 89 d8              mov  eax, ebx            ; the pass is done: report it
/// 40: e7 80              out  PORT_PASS, eax
/// 42: eb d6              jmp  2
/// ```
///
/// The reports every 4096 pages give the VMM a chance to stop the vCPU within a few
/// milliseconds, whatever the working set. The fill program:
///
/// ```text
///  0: bf <base>          mov  edi, WORKING_SET_BASE
///  5: b9 <pages*1024>    mov  ecx, dwords
/// 10: b8 <seed>          mov  eax, seed
/// 15: 89 c2              mov  edx, eax            ; xorshift32
/// 17: c1 e2 0d           shl  edx, 13
/// 20: 31 d0              xor  eax, edx
/// 22: 89 c2              mov  edx, eax
/// 24: c1 ea 11           shr  edx, 17
/// 27: 31 d0              xor  eax, edx
/// 29: 89 c2              mov  edx, eax
/// 31: c1 e2 05           shl  edx, 5
/// 34: 31 d0              xor  eax, edx
/// 36: ab                 stosd                    ; [edi] = eax, edi += 4
/// 37: 49                 dec  ecx
/// 38: 75 e7              jnz  15
/// 40: b8 ff ff ff ff     mov  eax, FILLED
/// 45: e7 80              out  PORT_PASS, eax
/// 47: e7 81              out  PORT_PROGRESS, eax  ; spin, exiting to the VMM
/// 49: eb fc              jmp  47
/// ```
///
/// That is the image for one vCPU, the one QEMU boots. [`smp_guest_image`] adds a
/// program for each further vCPU.
pub fn guest_image(workload: Workload) -> Vec<u8> {
    smp_guest_image(workload, 1)
}

/// The guest image for `workload` on `vcpus` vCPUs: the header, then one program per
/// vCPU, vCPU `i` entering at [`vcpu_entry`]`(workload, i)`. A rewriting guest's
/// working set is split into `vcpus` slices ([`vcpu_slice`]), each vCPU running the
/// rewrite program over its own; a filling or preloaded guest's vCPU 0 runs the
/// program for the whole working set and the others halt with interrupts off
/// (`cli; hlt; jmp`), a state that only a signal gets them out of.
pub fn smp_guest_image(workload: Workload, vcpus: u32) -> Vec<u8> {
    assert!(vcpus >= 1, "a machine needs a vCPU");
    let mut image = multiboot_header().to_vec();
    for i in 0..vcpus {
        image.extend(match workload {
            Workload::Rewrite { .. } => {
                let (base, pages) = vcpu_slice(workload, vcpus, i);
                rewrite_program(base, pages)
            }
            Workload::Fill { pages, seed } if i == 0 => fill_program(pages, seed),
            Workload::Preloaded { .. } if i == 0 => preloaded_program(),
            _ => halt_program(),
        });
    }
    image
}

/// Where vCPU `index` of a machine running `workload` starts.
pub fn vcpu_entry(workload: Workload, index: u32) -> u64 {
    let first = match workload {
        Workload::Rewrite { .. } => REWRITE_LEN,
        Workload::Fill { .. } => FILL_LEN,
        Workload::Preloaded { .. } => PRELOADED_LEN,
    };
    match index {
        0 => ENTRY,
        i => {
            let each = match workload {
                Workload::Rewrite { .. } => REWRITE_LEN,
                _ => HALT_LEN,
            };
            ENTRY + first as u64 + u64::from(i - 1) * each as u64
        }
    }
}

/// The guest address and page count of vCPU `index`'s slice of a rewriting guest's
/// working set (the whole working set for the other workloads' vCPU 0).
pub fn vcpu_slice(workload: Workload, vcpus: u32, index: u32) -> (u64, u32) {
    let pages = u64::from(workload.pages());
    let (n, i) = (u64::from(vcpus), u64::from(index));
    let (first, end) = (pages * i / n, pages * (i + 1) / n);
    (WORKING_SET_BASE + first * 4096, (end - first) as u32)
}

const REWRITE_LEN: usize = 44;
const FILL_LEN: usize = 51;
const PRELOADED_LEN: usize = 16;
const HALT_LEN: usize = 4;

/// A multiboot header with the address fields ("a.out kludge"): the image is loaded
/// whole at [`IMAGE_ADDR`] and entered at [`ENTRY`].
fn multiboot_header() -> [u8; 32] {
    const MAGIC: u32 = 0x1bad_b002;
    const FLAGS: u32 = 1 << 16; // the address fields are valid
    let fields = [
        MAGIC,
        FLAGS,
        0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS)), // checksum
        IMAGE_ADDR as u32,                            // header_addr
        IMAGE_ADDR as u32,                            // load_addr
        0,                                            // load_end_addr: the whole file
        0,                                            // bss_end_addr: no bss
        ENTRY as u32,                                 // entry_addr
    ];
    let mut out = [0u8; 32];
    for (chunk, f) in out.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&f.to_le_bytes());
    }
    out
}

fn rewrite_program(base: u64, pages: u32) -> Vec<u8> {
    assert!(pages > 0, "each vCPU's working set needs a page");
    let mut code = vec![0x31, 0xdb, 0x43, 0xbf];
    code.extend((base as u32).to_le_bytes());
    code.push(0xb9);
    code.extend(pages.to_le_bytes());
    code.extend([
        0x89,
        0x1f, // mov [edi], ebx
        0x81,
        0xc7,
        0x00,
        0x10,
        0x00,
        0x00, // add edi, 4096
        0x49, // dec ecx
        0x74,
        0x0e, // jz done
        0xf7,
        0xc1,
        0xff,
        0x0f,
        0x00,
        0x00, // test ecx, 0xfff
        0x75,
        0xed, // jnz page
        0x89,
        0xc8, // mov eax, ecx
        0xe7,
        PORT_PROGRESS as u8, // out PORT_PROGRESS, eax
        0xeb,
        0xe7, // jmp page
        0x89,
        0xd8, // done: mov eax, ebx
        0xe7,
        PORT_PASS as u8, // out PORT_PASS, eax
        0xeb,
        0xd6, // jmp pass
    ]);
    debug_assert_eq!(code.len(), REWRITE_LEN);
    code
}

fn fill_program(pages: u32, seed: u32) -> Vec<u8> {
    assert!(pages > 0 && seed != 0, "a page to fill and a non-zero seed");
    let mut code = vec![0xbf];
    code.extend((WORKING_SET_BASE as u32).to_le_bytes());
    code.push(0xb9);
    code.extend((pages * 1024).to_le_bytes());
    code.push(0xb8);
    code.extend(seed.to_le_bytes());
    code.extend([
        0x89,
        0xc2,
        0xc1,
        0xe2,
        0x0d,
        0x31,
        0xd0, // x ^= x << 13
        0x89,
        0xc2,
        0xc1,
        0xea,
        0x11,
        0x31,
        0xd0, // x ^= x >> 17
        0x89,
        0xc2,
        0xc1,
        0xe2,
        0x05,
        0x31,
        0xd0, // x ^= x << 5
        0xab, // stosd
        0x49, // dec ecx
        0x75,
        0xe7, // jnz fill
        0xb8,
        0xff,
        0xff,
        0xff,
        0xff, // mov eax, FILLED
        0xe7,
        PORT_PASS as u8, // out PORT_PASS, eax
        0xe7,
        PORT_PROGRESS as u8, // spin: out PORT_PROGRESS, eax
        0xeb,
        0xfc, // jmp spin
    ]);
    debug_assert_eq!(code.len(), FILL_LEN);
    code
}

/// The preloaded guest's program: `mov eax, FILLED; mov [WORKING_SET_BASE - 4], eax;
/// out PORT_PASS, eax; spin: out PORT_PROGRESS, eax; jmp spin`.
fn preloaded_program() -> Vec<u8> {
    let mut code = vec![0xb8, 0xff, 0xff, 0xff, 0xff, 0xa3];
    code.extend((WORKING_SET_BASE as u32 - 4).to_le_bytes());
    code.extend([0xe7, PORT_PASS as u8, 0xe7, PORT_PROGRESS as u8, 0xeb, 0xfc]);
    debug_assert_eq!(code.len(), PRELOADED_LEN);
    code
}

/// An idle vCPU: `cli; hlt; jmp hlt`. KVM keeps a halted vCPU inside `KVM_RUN` (the
/// interrupt controllers are in the kernel), so only a signal brings it back.
fn halt_program() -> Vec<u8> {
    vec![0xfa, 0xf4, 0xeb, 0xfd]
}

/// The bytes a [`Workload::Preloaded`] guest finds at [`WORKING_SET_BASE`] (none for
/// the others).
pub fn preload(workload: Workload) -> Option<Vec<u8>> {
    match workload {
        Workload::Preloaded { pages, seed } => Some(
            fill_words(seed)
                .take(pages as usize * 1024)
                .flat_map(u32::to_le_bytes)
                .collect(),
        ),
        _ => None,
    }
}

/// The words [`Workload::Fill`] stores, in order (to check a filled guest's memory).
pub fn fill_words(seed: u32) -> impl Iterator<Item = u32> {
    std::iter::successors(Some(seed), |&x| {
        let x = x ^ (x << 13);
        let x = x ^ (x >> 17);
        Some(x ^ (x << 5))
    })
    .skip(1)
}

/// The VMM's console for one vCPU: what that vCPU reported, as a device (one
/// instance per vCPU).
#[derive(VmState, Default, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-console", version = 1)]
pub struct Console {
    /// Pass reports received.
    pub reports: u64,
    /// The last pass the vCPU reported.
    pub last_pass: u32,
}

/// What the vCPU threads do with each console line.
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

type AnyError = Box<dyn std::error::Error + Send + Sync>;
type AnyResult<T> = Result<T, AnyError>;

/// The signal that kicks a vCPU thread out of `KVM_RUN` (the first real-time signal,
/// with a handler that does nothing: its arrival is the point).
#[allow(non_snake_case)]
pub fn KICK_SIGNAL() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the kick handler once per process (without one, the signal would kill it).
fn install_kick_handler() -> AnyResult<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            register_signal_handler(KICK_SIGNAL(), on_kick)
                .map_err(|e| format!("cannot install the vCPU kick handler: {e}"))
        })
        .clone()
        .map_err(AnyError::from)
}

/// Running vCPU threads and the flag that asks them to stop.
struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<AnyResult<VcpuFd>>>,
}

/// The virtual machine.
pub struct KvmMachine {
    /// The VM.
    pub vm: Arc<VmFd>,
    /// Guest RAM.
    pub block: Arc<RamBlock>,
    /// Guest RAM as a KVM memory slot.
    pub ram: Arc<KvmRam>,
    /// Each vCPU's state while the machine is stopped (saved and loaded as `kvm-cpu`,
    /// instance = vCPU index).
    pub cpus: Vec<Arc<Mutex<CpuState>>>,
    /// Each vCPU's console (saved and loaded as `kvm-console`, instance = vCPU index).
    pub consoles: Vec<Arc<Mutex<Console>>>,
    /// The in-kernel interrupt controllers and clock while stopped (`kvm-chipset`).
    pub chipset: Arc<Mutex<Chipset>>,
    on_line: LineSink,
    /// The vCPUs while stopped (empty while they run).
    vcpus: Vec<VcpuFd>,
    running: Option<Running>,
}

impl KvmMachine {
    /// A VM with `ram` bytes of memory at guest address 0, the in-kernel interrupt
    /// controllers, and one vCPU; see [`with_vcpus`](Self::with_vcpus).
    pub fn new(ram: u64, on_line: LineSink) -> AnyResult<KvmMachine> {
        KvmMachine::with_vcpus(ram, 1, on_line)
    }

    /// A VM with `ram` bytes of memory at guest address 0, the in-kernel interrupt
    /// controllers, and `vcpus` vCPUs with the host's supported CPUID. Nothing runs
    /// yet: [`boot`](Self::boot) it, or load a migrated guest into it and
    /// [`start`](Self::start) it.
    pub fn with_vcpus(ram: u64, vcpus: u32, on_line: LineSink) -> AnyResult<KvmMachine> {
        if vcpus == 0 {
            return Err("a machine needs at least one vCPU".into());
        }
        install_kick_handler()?;
        let kvm = Kvm::new()?;
        let vm = Arc::new(kvm.create_vm()?);
        vm.set_tss_address(0xfffb_d000)?;
        vm.create_irq_chip()?;
        let block = Arc::new(RamBlock::new("pc.ram", ram)?);
        let slot = Arc::new(KvmRam::new(block.clone(), vm.clone(), 0, 0)?);
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
        let mut fds = Vec::new();
        let mut cpus = Vec::new();
        for i in 0..vcpus {
            let vcpu = vm.create_vcpu(u64::from(i))?;
            vcpu.set_cpuid2(&cpuid)?;
            cpus.push(Arc::new(Mutex::new(CpuState::capture(&vcpu)?)));
            fds.push(vcpu);
        }
        let chipset = Chipset::capture(&vm)?;
        Ok(KvmMachine {
            vm,
            block,
            ram: slot,
            cpus,
            consoles: (0..vcpus).map(|_| Arc::default()).collect(),
            chipset: Arc::new(Mutex::new(chipset)),
            on_line,
            vcpus: fds,
            running: None,
        })
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.cpus.len() as u32
    }

    /// The last pass each vCPU reported.
    pub fn last_passes(&self) -> Vec<u32> {
        self.consoles
            .iter()
            .map(|c| c.lock().unwrap().last_pass)
            .collect()
    }

    /// Pass reports received from all vCPUs.
    pub fn reports(&self) -> u64 {
        self.consoles
            .iter()
            .map(|c| c.lock().unwrap().reports)
            .sum()
    }

    /// Faults in all guest memory now (QEMU's `-mem-prealloc`), so that loading a
    /// migrated guest does not pay the kernel's page zeroing on the way.
    pub fn preallocate(&self) -> AnyResult<()> {
        Ok(self.block.preallocate()?)
    }

    /// Loads the guest image for `workload` and puts each vCPU at its entry as a
    /// multiboot loader leaves the first: flat 32-bit protected mode, paging off, EAX
    /// holding the multiboot magic. The other vCPUs are made runnable at once (their
    /// state set directly, as no startup IPI is needed for it).
    pub fn boot(&mut self, workload: Workload) -> AnyResult<()> {
        let end = WORKING_SET_BASE + u64::from(workload.pages()) * 4096;
        if end > self.block.len() {
            return Err(format!(
                "a working set of {} pages ends at 0x{end:x}, past the RAM's 0x{:x} bytes",
                workload.pages(),
                self.block.len()
            )
            .into());
        }
        let n = self.vcpu_count();
        if matches!(workload, Workload::Rewrite { pages } if pages < n) {
            return Err(format!("{n} vCPUs need a working set of at least {n} pages").into());
        }
        if self.vcpus.len() != n as usize {
            return Err("the vCPUs are running".into());
        }
        self.block.write(IMAGE_ADDR, &smp_guest_image(workload, n));
        if let Some(data) = preload(workload) {
            self.block.write(WORKING_SET_BASE, &data);
        }
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            let mut sregs = vcpu.get_sregs()?;
            let flat = |selector, type_| kvm_bindings::kvm_segment {
                base: 0,
                limit: 0xffff_ffff,
                selector,
                type_,
                present: 1,
                dpl: 0,
                db: 1,
                s: 1,
                l: 0,
                g: 1,
                avl: 0,
                unusable: 0,
                padding: 0,
            };
            sregs.cs = flat(0x08, 0xb);
            for seg in [
                &mut sregs.ds,
                &mut sregs.es,
                &mut sregs.fs,
                &mut sregs.gs,
                &mut sregs.ss,
            ] {
                *seg = flat(0x10, 0x3);
            }
            sregs.cr0 |= 1; // protected mode, no paging
            vcpu.set_sregs(&sregs)?;
            let mut regs = vcpu.get_regs()?;
            regs.rip = vcpu_entry(workload, i as u32);
            regs.rax = 0x2bad_b002; // the multiboot loader's magic
            regs.rflags = 2;
            vcpu.set_regs(&regs)?;
            let mut state = CpuState::capture(vcpu)?;
            // An application processor starts out waiting for INIT and SIPI.
            state.mp_state = cpu::MP_STATE_RUNNABLE;
            *self.cpus[i].lock().unwrap() = state;
        }
        Ok(())
    }

    /// A registry with everything a migration carries: RAM (the `ram` section), the
    /// chipset, each vCPU and each console; and the RAM handler's counters.
    pub fn registry(&self) -> AnyResult<(Registry, Arc<RamStats>)> {
        self.registry_with(|h| h)
    }

    /// [`registry`](Self::registry) with its RAM handler set up by `setup` (a
    /// postcopy-preempt channel).
    pub fn registry_with(
        &self,
        setup: impl FnOnce(RamHandler) -> RamHandler,
    ) -> AnyResult<(Registry, Arc<RamStats>)> {
        let mut reg = Registry::new();
        let ram = setup(RamHandler::new(vec![self.ram.clone()])?);
        let stats = ram.stats();
        reg.register_iterative("ram", RAM_VERSION, ram, Registration::new())?;
        reg.register_device(self.chipset.clone(), Registration::new())?;
        for (i, cpu) in self.cpus.iter().enumerate() {
            reg.register_device(cpu.clone(), Registration::new().instance(i as u32))?;
        }
        for (i, console) in self.consoles.iter().enumerate() {
            reg.register_device(console.clone(), Registration::new().instance(i as u32))?;
        }
        Ok((reg, stats))
    }

    /// Gives the VM the state in [`chipset`](Self::chipset) and each vCPU its state
    /// in [`cpus`](Self::cpus), and runs each vCPU in its own thread.
    pub fn start(&mut self) -> AnyResult<()> {
        if self.running.is_some() {
            return Err("the vCPUs are already running".into());
        }
        self.chipset.lock().unwrap().restore(&self.vm)?;
        for (vcpu, cpu) in self.vcpus.iter().zip(&self.cpus) {
            cpu.lock().unwrap().restore(&self.vm, vcpu)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let many = self.vcpus.len() > 1;
        let mut threads = Vec::new();
        for (i, vcpu) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let flag = stop.clone();
            let console = self.consoles[i].clone();
            let on_line = self.on_line.clone();
            let name = if many {
                format!("vcpu{i} ")
            } else {
                String::new()
            };
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || run_vcpu(vcpu, &flag, &console, &name, &*on_line));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.running = Some(Running { stop, threads });
                    let _ = self.stop();
                    return Err(e.into());
                }
            }
        }
        self.running = Some(Running { stop, threads });
        Ok(())
    }

    /// Stops the vCPUs (each kicked out of the guest by a signal, within microseconds)
    /// and saves their state into [`cpus`](Self::cpus) and the chipset's into
    /// [`chipset`](Self::chipset).
    pub fn stop(&mut self) -> AnyResult<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.stop.store(true, Ordering::SeqCst);
        // A signal that arrives just before a thread enters KVM_RUN is lost, so the
        // kick repeats until every thread has left.
        let deadline = Instant::now() + Duration::from_secs(10);
        while running.threads.iter().any(|t| !t.is_finished()) {
            for t in running.threads.iter().filter(|t| !t.is_finished()) {
                let _ = t.kill(KICK_SIGNAL());
            }
            if Instant::now() > deadline {
                return Err("a vCPU thread did not stop within 10 s".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut first_error = None;
        for t in running.threads {
            match t.join() {
                Ok(Ok(vcpu)) => self.vcpus.push(vcpu),
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => first_error = first_error.or(Some("a vCPU thread panicked".into())),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for (vcpu, cpu) in self.vcpus.iter().zip(&self.cpus) {
            *cpu.lock().unwrap() = CpuState::capture(vcpu)?;
        }
        *self.chipset.lock().unwrap() = Chipset::capture(&self.vm)?;
        Ok(())
    }

    /// Whether the vCPU threads run.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

impl Drop for KvmMachine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// EINTR: `KVM_RUN` was interrupted by a signal (the kick).
const EINTR: i32 = libc::EINTR;

/// A vCPU thread: runs the guest until asked to stop, turning pass reports into
/// console lines (prefixed with `name`); then completes any pending port write inside
/// KVM (an `immediate_exit` run, as KVM's documentation asks before reading a vCPU's
/// state) and hands the vCPU back.
fn run_vcpu(
    mut vcpu: VcpuFd,
    stop: &AtomicBool,
    console: &Mutex<Console>,
    name: &str,
    on_line: &(dyn Fn(&str) + Send + Sync),
) -> AnyResult<VcpuFd> {
    while !stop.load(Ordering::Acquire) {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(PORT_PASS, data)) => {
                let mut word = [0u8; 4];
                word[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
                let pass = u32::from_le_bytes(word);
                let mut c = console.lock().unwrap();
                c.reports += 1;
                c.last_pass = pass;
                drop(c);
                match pass {
                    FILLED => on_line(&format!("guest: {name}memory filled")),
                    _ => on_line(&format!("guest: {name}pass {pass} done")),
                }
            }
            Ok(VcpuExit::IoOut(PORT_PROGRESS, _)) => {}
            Ok(other) => {
                return Err(format!("the guest stopped unexpectedly: {other:?}").into());
            }
            Err(e) if e.errno() == EINTR => {} // kicked: look at the flag
            Err(e) => return Err(e.into()),
        }
    }
    vcpu.set_kvm_immediate_exit(1);
    let completed = match vcpu.run() {
        Err(e) if e.errno() == EINTR => Ok(()), // pending I/O completed, nothing run
        Err(e) => Err(AnyError::from(e)),
        Ok(exit) => Err(format!("an immediate-exit run returned {exit:?}").into()),
    };
    vcpu.set_kvm_immediate_exit(0);
    completed.map(|()| vcpu)
}

/// The source's guest, for [`migrate_over`](vmstate::migrate::migrate_over).
impl GuestControl for KvmMachine {
    fn stop(&mut self) -> vmstate::Result<()> {
        KvmMachine::stop(self)
            .map_err(|e| vmstate::Error::invalid("vCPU", format!("cannot stop the vCPUs: {e}")))
    }

    fn resume(&mut self) {
        if let Err(e) = self.start() {
            (self.on_line)(&format!("vmm: cannot resume the vCPUs: {e}"));
        }
    }
}
