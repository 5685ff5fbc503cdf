//! A vCPU's state as KVM keeps it, described with `#[derive(VmState)]` so that it
//! travels as a device section (`kvm-cpu`, one instance per vCPU): general registers,
//! segment and control registers, the x87/SSE state, a set of MSRs, the local APIC's
//! registers and the pending events (version 1), and since version 2 the whole XSAVE
//! area (AVX and later), XCR0 and the multiprocessing state (running, halted, waiting
//! for a startup IPI). A version 1 section still loads: its vCPU keeps the x87/SSE
//! state of `fpu` and is runnable.
//!
//! The VM-wide state (the in-kernel PIC, IOAPIC and clock) is
//! [`Chipset`](super::chipset::Chipset).

use kvm_bindings::{
    Msrs, kvm_dtable, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_segment,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{VcpuFd, VmFd};
use vmstate::VmState;
use zerocopy::{FromBytes, IntoBytes};

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

/// The XSAVE area (`KVM_GET_XSAVE`): x87, SSE, AVX and every later state component
/// the host's KVM offers, in the processor's XSAVE layout.
#[derive(VmState, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu/xsave")]
pub struct Xsave {
    /// The 4 KiB area.
    #[vmstate(buffer)]
    pub area: [u8; 4096],
}

impl Default for Xsave {
    fn default() -> Self {
        Xsave { area: [0; 4096] }
    }
}

/// KVM's multiprocessing state: runnable, halted, or an application processor still
/// waiting for INIT and startup IPIs.
pub const MP_STATE_RUNNABLE: u32 = kvm_bindings::KVM_MP_STATE_RUNNABLE;

/// Everything KVM keeps about one vCPU that a migration must carry.
#[derive(VmState, Clone, Debug, PartialEq)]
#[vmstate(name = "kvm-cpu", version = 2, min_version = 1, post_load = Self::loaded)]
#[allow(missing_docs)]
pub struct CpuState {
    pub regs: Regs,
    pub sregs: Sregs,
    pub fpu: Fpu,
    pub msrs: [Msr; 10],
    pub lapic: Lapic,
    pub events: Events,
    /// The whole XSAVE area; when present it supersedes `fpu`.
    #[vmstate(since = 2)]
    pub xsave: Xsave,
    /// Whether `xsave` was loaded (a version 1 section has none).
    #[vmstate(skip)]
    pub has_xsave: bool,
    /// Extended control register 0 (which XSAVE components the guest enabled).
    #[vmstate(since = 2)]
    pub xcr0: u64,
    /// `KVM_MP_STATE_*`.
    #[vmstate(since = 2)]
    pub mp_state: u32,
}

impl Default for CpuState {
    fn default() -> Self {
        CpuState {
            regs: Regs::default(),
            sregs: Sregs::default(),
            fpu: Fpu::default(),
            msrs: [Msr::default(); 10],
            lapic: Lapic::default(),
            events: Events::default(),
            xsave: Xsave::default(),
            has_xsave: false,
            xcr0: 1, // x87 only, the architectural reset value
            mp_state: MP_STATE_RUNNABLE,
        }
    }
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
        let xcrs = vcpu.get_xcrs()?;
        let xcr0 = xcrs.xcrs[..(xcrs.nr_xcrs as usize).min(xcrs.xcrs.len())]
            .iter()
            .find(|x| x.xcr == 0)
            .map_or(1, |x| x.value);
        let mut xsave = Xsave::default();
        xsave.area.copy_from_slice(
            vcpu.get_xsave()?
                .as_bytes()
                .get(..4096)
                .unwrap_or(&[0; 4096]),
        );
        Ok(CpuState {
            regs: Regs::from_kvm(&vcpu.get_regs()?),
            sregs: Sregs::from_kvm(&vcpu.get_sregs()?),
            fpu: Fpu::from_kvm(&vcpu.get_fpu()?),
            msrs: saved,
            lapic: Lapic {
                regs: vcpu.get_lapic()?.regs.map(|b| b as u8),
            },
            events: Events::from_kvm(&vcpu.get_vcpu_events()?),
            xsave,
            has_xsave: true,
            xcr0,
            mp_state: vcpu.get_mp_state()?.mp_state,
        })
    }

    /// Gives a vCPU of `vm` this state (before it runs). The order follows QEMU's
    /// `kvm_arch_put_registers`: general registers, XSAVE and XCRs, special registers,
    /// MSRs, the multiprocessing state, the LAPIC, then events.
    pub fn restore(&self, vm: &VmFd, vcpu: &VcpuFd) -> KvmResult<()> {
        vcpu.set_regs(&self.regs.to_kvm())?;
        vcpu.set_fpu(&self.fpu.to_kvm())?;
        if self.has_xsave {
            let area =
                kvm_xsave::read_from_bytes(&self.xsave.area).expect("kvm_xsave is the 4 KiB area");
            vmstate::ram::set_vcpu_xsave(vm, vcpu, &area)
                .map_err(|_| kvm_ioctls::Error::new(libc::EINVAL))?;
            let mut xcrs = kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            };
            xcrs.xcrs[0].value = self.xcr0;
            vcpu.set_xcrs(&xcrs)?;
        }
        vcpu.set_sregs(&self.sregs.to_kvm())?;
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
        vcpu.set_mp_state(kvm_mp_state {
            mp_state: self.mp_state,
        })?;
        vcpu.set_lapic(&lapic)?;
        vcpu.set_vcpu_events(&self.events.to_kvm())?;
        Ok(())
    }

    /// Called after loading: a version 1 section carried no XSAVE area.
    fn loaded(&mut self, version: u32) -> Result<(), std::convert::Infallible> {
        self.has_xsave = version >= 2;
        if version < 2 {
            self.xcr0 = 1;
            self.mp_state = MP_STATE_RUNNABLE;
        }
        Ok(())
    }
}

/// EIO, for an MSR KVM would not read or write.
fn libc_eio() -> i32 {
    libc::EIO
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_section_loads_without_the_xsave_area() {
        let mut state = CpuState::default();
        state.regs.rip = 0x10_0020;
        state.mp_state = kvm_bindings::KVM_MP_STATE_HALTED;
        state.has_xsave = true;
        let v2 = state.to_bytes().unwrap();
        // Version 1 is version 2 without the fields added in 2, which come last: the
        // 4 KiB XSAVE area, XCR0 (8 bytes) and the MP state (4 bytes).
        let v1 = &v2[..v2.len() - 4096 - 8 - 4];
        let mut loaded = CpuState::default();
        loaded.load_bytes(v1, 1).unwrap();
        assert_eq!(loaded.regs.rip, 0x10_0020);
        assert!(!loaded.has_xsave, "no XSAVE area to give KVM");
        assert_eq!(loaded.mp_state, MP_STATE_RUNNABLE);
        assert_eq!(loaded.xcr0, 1);

        let mut again = CpuState::default();
        again.load_bytes(&v2, 2).unwrap();
        assert!(again.has_xsave);
        assert_eq!(again.mp_state, kvm_bindings::KVM_MP_STATE_HALTED);
    }
}
