//! A vCPU's state as KVM keeps it, described with `#[derive(VmState)]` so that it
//! travels as a device section (`kvm-cpu`, one instance per vCPU): general registers,
//! segment and control registers, the x87/SSE state, a set of MSRs, the local APIC's
//! registers and the pending events.
//!
//! Not included: the XSAVE area beyond SSE (AVX and later; the example's guest uses
//! none, and restoring it needs `KVM_SET_XSAVE`, which kvm-ioctls marks unsafe) and
//! the in-kernel PIC and IOAPIC (the guest runs with interrupts off).

use kvm_bindings::{
    Msrs, kvm_dtable, kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs,
    kvm_vcpu_events,
};
use kvm_ioctls::VcpuFd;
use vmstate::VmState;

/// The MSRs saved with each vCPU: the time-stamp counter, SYSENTER and SYSCALL targets,
/// the PAT and the kernel GS base.
pub const SAVED_MSRS: [u32; 10] = [
    0x10,        // IA32_TIME_STAMP_COUNTER
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0x277,       // IA32_PAT
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SYSCALL_MASK
    0xc000_0102, // KERNEL_GS_BASE
];

/// General-purpose registers, RIP and RFLAGS.
#[derive(VmState, Default, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/regs")]
pub struct Regs {
    /// RAX ... R15, in `kvm_regs` order.
    pub gpr: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
}

/// A segment register with its hidden part.
#[derive(VmState, Default, Clone, Copy, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/segment")]
#[allow(missing_docs)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
}

/// A descriptor table register (GDTR, IDTR).
#[derive(VmState, Default, Clone, Copy, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/dtable")]
#[allow(missing_docs)]
pub struct DTable {
    pub base: u64,
    pub limit: u16,
}

/// Segment, descriptor-table and control registers.
#[derive(VmState, Default, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/sregs")]
#[allow(missing_docs)]
pub struct Sregs {
    /// CS, DS, ES, FS, GS, SS, TR, LDT.
    pub segments: [Segment; 8],
    pub gdt: DTable,
    pub idt: DTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

/// The x87 and SSE state (`KVM_GET_FPU`).
#[derive(VmState, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/fpu")]
#[allow(missing_docs)]
pub struct Fpu {
    /// ST0-ST7, 16 bytes each.
    #[vmstate(buffer)]
    pub fpr: [u8; 128],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    /// XMM0-XMM15, 16 bytes each.
    #[vmstate(buffer)]
    pub xmm: [u8; 256],
    pub mxcsr: u32,
}

impl Default for Fpu {
    fn default() -> Self {
        Fpu::from_kvm(&kvm_fpu::default())
    }
}

/// One MSR.
#[derive(VmState, Default, Clone, Copy, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/msr")]
#[allow(missing_docs)]
pub struct Msr {
    pub index: u32,
    pub data: u64,
}

/// The local APIC's register page (`KVM_GET_LAPIC`).
#[derive(VmState, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/lapic")]
pub struct Lapic {
    /// The 1 KiB register page.
    #[vmstate(buffer)]
    pub regs: [u8; 1024],
}

impl Default for Lapic {
    fn default() -> Self {
        Lapic { regs: [0; 1024] }
    }
}

/// Exceptions, interrupts, NMIs and SMIs pending or being injected
/// (`KVM_GET_VCPU_EVENTS`).
#[derive(VmState, Default, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/events")]
#[allow(missing_docs)]
pub struct Events {
    pub exception_injected: u8,
    pub exception_nr: u8,
    pub exception_has_error_code: u8,
    pub exception_pending: u8,
    pub exception_error_code: u32,
    pub exception_has_payload: u8,
    pub exception_payload: u64,
    pub interrupt_injected: u8,
    pub interrupt_nr: u8,
    pub interrupt_soft: u8,
    pub interrupt_shadow: u8,
    pub nmi_injected: u8,
    pub nmi_pending: u8,
    pub nmi_masked: u8,
    pub sipi_vector: u32,
    pub flags: u32,
    pub smi_smm: u8,
    pub smi_pending: u8,
    pub smi_smm_inside_nmi: u8,
    pub smi_latched_init: u8,
    pub triple_fault_pending: u8,
}

/// Everything KVM keeps about one vCPU that a migration must carry.
#[derive(VmState, Default, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu", version = 1)]
#[allow(missing_docs)]
pub struct CpuState {
    pub regs: Regs,
    pub sregs: Sregs,
    pub fpu: Fpu,
    pub msrs: [Msr; 10],
    pub lapic: Lapic,
    pub events: Events,
}

type KvmResult<T> = Result<T, kvm_ioctls::Error>;

impl CpuState {
    /// Reads the state of a vCPU that is not running.
    pub fn capture(vcpu: &VcpuFd) -> KvmResult<CpuState> {
        let mut msrs = Msrs::from_entries(&SAVED_MSRS.map(|index| kvm_msr_entry {
            index,
            ..Default::default()
        }))
        .expect("10 MSR entries fit");
        let read = vcpu.get_msrs(&mut msrs)?;
        if read != SAVED_MSRS.len() {
            return Err(kvm_ioctls::Error::new(libc_eio()));
        }
        let mut saved = [Msr::default(); 10];
        for (out, e) in saved.iter_mut().zip(msrs.as_slice()) {
            *out = Msr {
                index: e.index,
                data: e.data,
            };
        }
        Ok(CpuState {
            regs: Regs::from_kvm(&vcpu.get_regs()?),
            sregs: Sregs::from_kvm(&vcpu.get_sregs()?),
            fpu: Fpu::from_kvm(&vcpu.get_fpu()?),
            msrs: saved,
            lapic: Lapic {
                regs: vcpu.get_lapic()?.regs.map(|b| b as u8),
            },
            events: Events::from_kvm(&vcpu.get_vcpu_events()?),
        })
    }

    /// Gives a vCPU this state (before it runs). The order follows QEMU's
    /// `kvm_arch_put_registers`: special registers before MSRs, the LAPIC, then events.
    pub fn restore(&self, vcpu: &VcpuFd) -> KvmResult<()> {
        vcpu.set_sregs(&self.sregs.to_kvm())?;
        vcpu.set_regs(&self.regs.to_kvm())?;
        vcpu.set_fpu(&self.fpu.to_kvm())?;
        let entries = self.msrs.map(|m| kvm_msr_entry {
            index: m.index,
            data: m.data,
            ..Default::default()
        });
        let msrs = Msrs::from_entries(&entries).expect("10 MSR entries fit");
        if vcpu.set_msrs(&msrs)? != entries.len() {
            return Err(kvm_ioctls::Error::new(libc_eio()));
        }
        let mut lapic = kvm_lapic_state::default();
        for (out, b) in lapic.regs.iter_mut().zip(self.lapic.regs) {
            *out = b as _;
        }
        vcpu.set_lapic(&lapic)?;
        vcpu.set_vcpu_events(&self.events.to_kvm())?;
        Ok(())
    }
}

/// EIO, for an MSR KVM would not read or write.
fn libc_eio() -> i32 {
    5
}

impl Regs {
    fn from_kvm(r: &kvm_regs) -> Regs {
        Regs {
            gpr: [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags,
        }
    }

    fn to_kvm(&self) -> kvm_regs {
        let g = self.gpr;
        kvm_regs {
            rax: g[0],
            rbx: g[1],
            rcx: g[2],
            rdx: g[3],
            rsi: g[4],
            rdi: g[5],
            rsp: g[6],
            rbp: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: self.rip,
            rflags: self.rflags,
        }
    }
}

impl Segment {
    fn from_kvm(s: &kvm_segment) -> Segment {
        Segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
        }
    }

    fn to_kvm(self) -> kvm_segment {
        kvm_segment {
            base: self.base,
            limit: self.limit,
            selector: self.selector,
            type_: self.type_,
            present: self.present,
            dpl: self.dpl,
            db: self.db,
            s: self.s,
            l: self.l,
            g: self.g,
            avl: self.avl,
            unusable: self.unusable,
            padding: 0,
        }
    }
}

impl DTable {
    fn from_kvm(d: &kvm_dtable) -> DTable {
        DTable {
            base: d.base,
            limit: d.limit,
        }
    }

    fn to_kvm(self) -> kvm_dtable {
        kvm_dtable {
            base: self.base,
            limit: self.limit,
            padding: [0; 3],
        }
    }
}

impl Sregs {
    fn from_kvm(s: &kvm_sregs) -> Sregs {
        Sregs {
            segments: [s.cs, s.ds, s.es, s.fs, s.gs, s.ss, s.tr, s.ldt]
                .map(|seg| Segment::from_kvm(&seg)),
            gdt: DTable::from_kvm(&s.gdt),
            idt: DTable::from_kvm(&s.idt),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
            interrupt_bitmap: s.interrupt_bitmap,
        }
    }

    fn to_kvm(&self) -> kvm_sregs {
        let [cs, ds, es, fs, gs, ss, tr, ldt] = self.segments.map(Segment::to_kvm);
        kvm_sregs {
            cs,
            ds,
            es,
            fs,
            gs,
            ss,
            tr,
            ldt,
            gdt: self.gdt.to_kvm(),
            idt: self.idt.to_kvm(),
            cr0: self.cr0,
            cr2: self.cr2,
            cr3: self.cr3,
            cr4: self.cr4,
            cr8: self.cr8,
            efer: self.efer,
            apic_base: self.apic_base,
            interrupt_bitmap: self.interrupt_bitmap,
        }
    }
}

impl Fpu {
    fn from_kvm(f: &kvm_fpu) -> Fpu {
        Fpu {
            fpr: f.fpr.as_flattened().try_into().expect("8 x 16 bytes"),
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm.as_flattened().try_into().expect("16 x 16 bytes"),
            mxcsr: f.mxcsr,
        }
    }

    fn to_kvm(&self) -> kvm_fpu {
        let mut f = kvm_fpu {
            fcw: self.fcw,
            fsw: self.fsw,
            ftwx: self.ftwx,
            last_opcode: self.last_opcode,
            last_ip: self.last_ip,
            last_dp: self.last_dp,
            mxcsr: self.mxcsr,
            ..Default::default()
        };
        f.fpr.as_flattened_mut().copy_from_slice(&self.fpr);
        f.xmm.as_flattened_mut().copy_from_slice(&self.xmm);
        f
    }
}

impl Events {
    fn from_kvm(e: &kvm_vcpu_events) -> Events {
        Events {
            exception_injected: e.exception.injected,
            exception_nr: e.exception.nr,
            exception_has_error_code: e.exception.has_error_code,
            exception_pending: e.exception.pending,
            exception_error_code: e.exception.error_code,
            exception_has_payload: e.exception_has_payload,
            exception_payload: e.exception_payload,
            interrupt_injected: e.interrupt.injected,
            interrupt_nr: e.interrupt.nr,
            interrupt_soft: e.interrupt.soft,
            interrupt_shadow: e.interrupt.shadow,
            nmi_injected: e.nmi.injected,
            nmi_pending: e.nmi.pending,
            nmi_masked: e.nmi.masked,
            sipi_vector: e.sipi_vector,
            flags: e.flags,
            smi_smm: e.smi.smm,
            smi_pending: e.smi.pending,
            smi_smm_inside_nmi: e.smi.smm_inside_nmi,
            smi_latched_init: e.smi.latched_init,
            triple_fault_pending: e.triple_fault.pending,
        }
    }

    fn to_kvm(&self) -> kvm_vcpu_events {
        let mut e = kvm_vcpu_events::default();
        e.exception.injected = self.exception_injected;
        e.exception.nr = self.exception_nr;
        e.exception.has_error_code = self.exception_has_error_code;
        e.exception.pending = self.exception_pending;
        e.exception.error_code = self.exception_error_code;
        e.exception_has_payload = self.exception_has_payload;
        e.exception_payload = self.exception_payload;
        e.interrupt.injected = self.interrupt_injected;
        e.interrupt.nr = self.interrupt_nr;
        e.interrupt.soft = self.interrupt_soft;
        e.interrupt.shadow = self.interrupt_shadow;
        e.nmi.injected = self.nmi_injected;
        e.nmi.pending = self.nmi_pending;
        e.nmi.masked = self.nmi_masked;
        e.sipi_vector = self.sipi_vector;
        e.flags = self.flags;
        e.smi.smm = self.smi_smm;
        e.smi.pending = self.smi_pending;
        e.smi.smm_inside_nmi = self.smi_smm_inside_nmi;
        e.smi.latched_init = self.smi_latched_init;
        e.triple_fault.pending = self.triple_fault_pending;
        // KVM applies the pending NMI and the SIPI vector only when told they are valid
        // (KVM_GET_VCPU_EVENTS does not set these two flags itself).
        e.flags |= kvm_bindings::KVM_VCPUEVENT_VALID_NMI_PENDING
            | kvm_bindings::KVM_VCPUEVENT_VALID_SIPI_VECTOR;
        e
    }
}
