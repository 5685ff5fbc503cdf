//! A minimal KVM virtual machine: one vCPU running a program of its own in 32-bit
//! protected mode, its memory a [`RamBlock`] registered as a KVM memory slot
//! ([`KvmRam`], with KVM's dirty log feeding the migration), its vCPU state and its
//! console described with `#[derive(VmState)]` and saved as device sections.
//!
//! The guest ([`guest_program`]) stores a pass counter into the first word of every
//! page of its working set, pass after pass, and reports each finished pass on I/O port
//! [`PORT_PASS`]; the VMM turns each report into a console line. A destination that
//! loads the RAM, the vCPU state and the console resumes the guest where it stopped:
//! the next pass it reports is the one after the last the source reported.

pub mod cpu;
pub mod live;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vmstate::migrate::GuestControl;
use vmstate::ram::{KvmRam, RAM_VERSION, RamBlock, RamHandler, RamStats};
use vmstate::{Registration, Registry, VmState};

pub use cpu::CpuState;

/// The machine type name written in the stream's configuration section.
pub const MACHINE_TYPE: &str = "vmstate-kvm-demo-1.0";
/// Where the guest program is loaded and starts.
pub const CODE_ADDR: u64 = 0x1000;
/// Where the working set starts (1 MiB).
pub const WORKING_SET_BASE: u64 = 0x10_0000;
/// The port the guest reports each finished pass on (the pass number, 32 bits).
pub const PORT_PASS: u16 = 0x80;
/// The port the guest reports its position on every 4096 pages (pages left).
pub const PORT_PROGRESS: u16 = 0x81;

/// The guest program for a working set of `pages` pages at [`WORKING_SET_BASE`],
/// assembled by hand (32-bit code; offsets on the left):
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
/// milliseconds, whatever the working set.
pub fn guest_program(pages: u32) -> Vec<u8> {
    assert!(pages > 0, "the working set needs a page");
    let mut code = vec![0x31, 0xdb, 0x43, 0xbf];
    code.extend((WORKING_SET_BASE as u32).to_le_bytes());
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
    debug_assert_eq!(code.len(), 44);
    code
}

/// The VMM's console: what the guest reported, as a device.
#[derive(VmState, Default, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-console", version = 1)]
pub struct Console {
    /// Pass reports received.
    pub reports: u64,
    /// The last pass the guest reported.
    pub last_pass: u32,
}

/// What the vCPU thread does with each console line.
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

type AnyError = Box<dyn std::error::Error + Send + Sync>;
type AnyResult<T> = Result<T, AnyError>;

/// A running vCPU thread and the flag that asks it to stop.
struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<AnyResult<VcpuFd>>,
}

/// The virtual machine.
pub struct KvmMachine {
    /// The VM.
    pub vm: Arc<VmFd>,
    /// Guest RAM.
    pub block: Arc<RamBlock>,
    /// Guest RAM as a KVM memory slot.
    pub ram: Arc<KvmRam>,
    /// The vCPU's state while it is stopped (saved and loaded as `kvm-cpu`).
    pub cpu: Arc<Mutex<CpuState>>,
    /// The console (saved and loaded as `kvm-console`).
    pub console: Arc<Mutex<Console>>,
    on_line: LineSink,
    vcpu: Option<VcpuFd>,
    running: Option<Running>,
}

impl KvmMachine {
    /// A VM with `ram` bytes of memory at guest address 0, the in-kernel interrupt
    /// controllers, and one vCPU with the host's supported CPUID. Nothing runs yet:
    /// [`boot`](Self::boot) it, or load a migrated guest into it and
    /// [`start`](Self::start) it.
    pub fn new(ram: u64, on_line: LineSink) -> AnyResult<KvmMachine> {
        let kvm = Kvm::new()?;
        let vm = Arc::new(kvm.create_vm()?);
        vm.set_tss_address(0xfffb_d000)?;
        vm.create_irq_chip()?;
        let block = Arc::new(RamBlock::new("pc.ram", ram)?);
        let slot = Arc::new(KvmRam::new(block.clone(), vm.clone(), 0, 0)?);
        let vcpu = vm.create_vcpu(0)?;
        vcpu.set_cpuid2(&kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?)?;
        let cpu = CpuState::capture(&vcpu)?;
        Ok(KvmMachine {
            vm,
            block,
            ram: slot,
            cpu: Arc::new(Mutex::new(cpu)),
            console: Arc::default(),
            on_line,
            vcpu: Some(vcpu),
            running: None,
        })
    }

    /// Loads the guest program for a working set of `pages` pages and puts the vCPU at
    /// its first instruction in flat 32-bit protected mode.
    pub fn boot(&mut self, pages: u32) -> AnyResult<()> {
        let end = WORKING_SET_BASE + u64::from(pages) * 4096;
        if end > self.block.len() {
            return Err(format!(
                "a working set of {pages} pages ends at 0x{end:x}, past the RAM's 0x{:x} bytes",
                self.block.len()
            )
            .into());
        }
        self.block.write(CODE_ADDR, &guest_program(pages));
        let vcpu = self.vcpu.as_ref().ok_or("the vCPU is running")?;
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
        regs.rip = CODE_ADDR;
        regs.rflags = 2;
        vcpu.set_regs(&regs)?;
        *self.cpu.lock().unwrap() = CpuState::capture(vcpu)?;
        Ok(())
    }

    /// A registry with everything a migration carries: RAM (the `ram` section), the
    /// vCPU and the console; and the RAM handler's counters.
    pub fn registry(&self) -> AnyResult<(Registry, Arc<RamStats>)> {
        let mut reg = Registry::new();
        let ram = RamHandler::new(vec![self.ram.clone()])?;
        let stats = ram.stats();
        reg.register_iterative("ram", RAM_VERSION, ram, Registration::new())?;
        reg.register_device(self.cpu.clone(), Registration::new())?;
        reg.register_device(self.console.clone(), Registration::new())?;
        Ok((reg, stats))
    }

    /// Gives the vCPU the state in [`cpu`](Self::cpu) and runs it in its own thread.
    pub fn start(&mut self) -> AnyResult<()> {
        let vcpu = self.vcpu.take().ok_or("the vCPU is already running")?;
        if let Err(e) = self.cpu.lock().unwrap().restore(&vcpu) {
            self.vcpu = Some(vcpu);
            return Err(e.into());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, console, on_line) = (stop.clone(), self.console.clone(), self.on_line.clone());
        let thread = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || run_vcpu(vcpu, &flag, &console, &*on_line))?;
        self.running = Some(Running { stop, thread });
        Ok(())
    }

    /// Stops the vCPU (within one report of the guest, a few milliseconds) and saves
    /// its state into [`cpu`](Self::cpu).
    pub fn stop(&mut self) -> AnyResult<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.stop.store(true, Ordering::SeqCst);
        let vcpu = running
            .thread
            .join()
            .map_err(|_| "the vCPU thread panicked")??;
        *self.cpu.lock().unwrap() = CpuState::capture(&vcpu)?;
        self.vcpu = Some(vcpu);
        Ok(())
    }

    /// Whether the vCPU thread runs.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

impl Drop for KvmMachine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The vCPU loop: runs the guest until asked to stop, turning pass reports into
/// console lines; then completes the last port write inside KVM (an `immediate_exit`
/// run, as KVM's documentation asks before reading a vCPU's state) and hands the vCPU
/// back.
fn run_vcpu(
    mut vcpu: VcpuFd,
    stop: &AtomicBool,
    console: &Mutex<Console>,
    on_line: &(dyn Fn(&str) + Send + Sync),
) -> AnyResult<VcpuFd> {
    while !stop.load(Ordering::Relaxed) {
        match vcpu.run()? {
            VcpuExit::IoOut(PORT_PASS, data) => {
                let mut word = [0u8; 4];
                word[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
                let pass = u32::from_le_bytes(word);
                let mut c = console.lock().unwrap();
                c.reports += 1;
                c.last_pass = pass;
                drop(c);
                on_line(&format!("guest: pass {pass} done"));
            }
            VcpuExit::IoOut(PORT_PROGRESS, _) => {}
            other => return Err(format!("the guest stopped unexpectedly: {other:?}").into()),
        }
    }
    vcpu.set_kvm_immediate_exit(1);
    let completed = match vcpu.run() {
        Err(e) if e.errno() == 4 => Ok(()), // EINTR: pending I/O completed, nothing run
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
            .map_err(|e| vmstate::Error::invalid("vCPU", format!("cannot stop the vCPU: {e}")))
    }

    fn resume(&mut self) {
        if let Err(e) = self.start() {
            (self.on_line)(&format!("vmm: cannot resume the vCPU: {e}"));
        }
    }
}
