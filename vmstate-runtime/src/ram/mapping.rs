//! Guest memory as an anonymous, page-aligned mapping: atomic words for the vCPUs,
//! byte copies and kernel I/O for the migration.
//!
//! This is the crate's one home for `unsafe` code (DESIGN.md, rule 7). A RAM block's
//! memory is a private anonymous mapping (`memmap2`), so that it can be handed to the
//! kernel as it is (a KVM memory slot, a userfaultfd range, vectored I/O), and the
//! kernel is asked to back it with transparent huge pages (`MADV_HUGEPAGE`): a guest's
//! memory faulted in 2 MiB at a time instead of 4 KiB (loading 1 GiB into fresh memory:
//! 680 ms with 4 KiB pages, 226 ms with huge pages on the project's machine).
//!
//! The memory is reached in three ways, none of which creates a Rust reference to its
//! bytes:
//! - as `&[AtomicU64]` ([`Mapping::words`]): guest writes, dirty-page checks;
//! - by byte copies between the mapping and ordinary buffers ([`Mapping::copy_out`],
//!   [`Mapping::copy_in`]), which is how rust-vmm's `vm-memory` copies guest memory
//!   (`ptr::copy_nonoverlapping` for anything longer than a word);
//! - by the kernel, through [`write_all_vectored`], which sends pages to a socket or
//!   file straight from the mapping, and through userfaultfd ([`Userfault`]), which
//!   places whole pages atomically into memory registered for postcopy.
//!
//! The tests of this module run under Miri (`cargo +nightly miri test -p
//! vmstate-runtime --lib ram::mapping`, in `.ci/run`), except the vectored write, which
//! needs system calls Miri does not have.
//!
//! Guest memory is shared with code the migration does not synchronise with (vCPU
//! threads here, a real guest under KVM), so a copy may see a page half-way through a
//! guest write. That is harmless by construction: a page is copied only after its dirty
//! bit was cleared, and a guest write stores the data before it sets the bit, so a page
//! changed during its copy is dirty again and is sent again, whole.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use memmap2::{Advice, MmapMut, UncheckedAdvice};

/// A zero-filled anonymous mapping of whole 64-bit words.
pub(crate) struct Mapping {
    /// The first byte, taken once from the exclusive owner at creation.
    base: NonNull<u8>,
    len: usize,
    /// Owns the mapping (unmapped on drop); never dereferenced after creation.
    _map: MmapMut,
}

// SAFETY: a `Mapping` is plain memory owned by `_map`. `base` is only dereferenced
// through atomics, bounds-checked byte copies and the kernel (see the module docs), all
// of which may happen from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: shared use only goes through atomics, copies and the kernel.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({} bytes)", self.len)
    }
}

impl Mapping {
    /// Maps `bytes` (a multiple of 8) of zeroed anonymous memory, lazily populated, and
    /// asks for huge pages (ignored where the kernel has none).
    pub(crate) fn anonymous(bytes: usize) -> io::Result<Mapping> {
        assert_eq!(bytes % 8, 0, "a mapping holds whole words");
        let mut map = MmapMut::map_anon(bytes.max(1))?;
        // (Miri runs the mapping's tests but has no `madvise`.)
        if bytes > 0 && !cfg!(miri) {
            let _ = map.advise(Advice::HugePage);
        }
        let base = NonNull::new(map.as_mut_ptr()).expect("a mapping is never at address 0");
        Ok(Mapping {
            base,
            len: bytes,
            _map: map,
        })
    }

    /// Faults in every page for writing now (`MADV_POPULATE_WRITE`, Linux 5.14), so
    /// that later writes find memory already zeroed and mapped.
    pub(crate) fn populate(&self) -> io::Result<()> {
        if self.len == 0 || cfg!(miri) {
            return Ok(());
        }
        self._map.advise(Advice::PopulateWrite)
    }

    /// Drops the pages of `len` bytes at `at` (`MADV_DONTNEED`): they read as zero
    /// again, and in memory registered with [`Userfault`] they are missing again.
    pub(crate) fn discard(&self, at: usize, len: usize) -> io::Result<()> {
        self.check(at, len);
        if len == 0 || cfg!(miri) {
            return Ok(());
        }
        // SAFETY: the range is inside the live mapping (checked above). Dropping pages
        // of private anonymous memory only makes them read as zero (or fault into
        // userfaultfd); no Rust reference to the bytes exists (the module's rule), and
        // the atomic words read the new contents like any other change.
        unsafe {
            self._map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, at, len)
        }
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The memory as atomic words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `base` starts a live mapping of `len` bytes (a multiple of 8) that
        // `_map` unmaps only when `self` is dropped, which the returned borrow of `self`
        // prevents. A mapping is page-aligned, so `base` is aligned for `AtomicU64`;
        // anonymous memory starts zeroed and any bit pattern is a valid `AtomicU64`.
        // `AtomicU64` allows shared mutation through `&`, and no `&[u8]` or `&mut [u8]`
        // of the mapping is ever made.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU64>(), self.len / 8) }
    }

    /// Copies `out.len()` bytes at byte offset `at` out of the mapping.
    ///
    /// Panics if the range is outside the mapping.
    #[inline]
    pub(crate) fn copy_out(&self, at: usize, out: &mut [u8]) {
        self.check(at, out.len());
        // SAFETY: the range is inside the live mapping (checked above; `self` is
        // borrowed, so it is not unmapped), and `out` is a distinct Rust buffer, so the
        // two do not overlap. Concurrent guest writes to the range are expected: this
        // is vm-memory's copy of guest memory, and the module docs say why a torn copy
        // is re-sent.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(at), out.as_mut_ptr(), out.len())
        }
    }

    /// Copies `data` into the mapping at byte offset `at`.
    ///
    /// Panics if the range is outside the mapping.
    #[inline]
    pub(crate) fn copy_in(&self, at: usize, data: &[u8]) {
        self.check(at, data.len());
        // SAFETY: the range is inside the live mapping (checked above), and `data` is a
        // distinct Rust buffer. The mapping is only ever written through raw pointers
        // and atomics, never through a Rust reference that this write could invalidate.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(at), data.len())
        }
    }

    /// Reads `len` bytes of `file` at `offset` straight into the mapping at byte offset
    /// `at` (positioned reads, no intermediate buffer). A file that ends first is an
    /// `UnexpectedEof` error (the bytes read so far stay in place).
    ///
    /// Panics if the range is outside the mapping.
    pub(crate) fn read_in_at(
        &self,
        at: usize,
        len: usize,
        file: &std::fs::File,
        offset: u64,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        self.check(at, len);
        let mut done = 0;
        while done < len {
            let off = libc::off_t::try_from(offset + done as u64)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
            // SAFETY: `at + done .. at + len` is inside the live mapping (checked above;
            // `self` is borrowed, so it is not unmapped). The kernel writes into it as a
            // device would: no Rust reference to the mapping's bytes exists to be
            // invalidated (it is only ever accessed through raw pointers and atomics).
            let got = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    self.base.as_ptr().add(at + done).cast(),
                    len - done,
                    off,
                )
            };
            match got {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n if n > 0 => done += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends `len` bytes at byte offset `at` to `buf`: one copy, without zeroing the
    /// new bytes of `buf` first.
    ///
    /// Panics if the range is outside the mapping.
    #[inline]
    pub(crate) fn append_to(&self, at: usize, len: usize, buf: &mut Vec<u8>) {
        self.check(at, len);
        buf.reserve(len);
        let old = buf.len();
        // SAFETY: `reserve` made room for `len` bytes after `old`; the range of the
        // mapping is inside the live mapping (checked above) and cannot overlap `buf`'s
        // own allocation. The copy initialises exactly the `len` bytes that `set_len`
        // then adds. Concurrent guest writes: as for `copy_out`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(at),
                buf.as_mut_ptr().add(old),
                len,
            );
            buf.set_len(old + len);
        }
    }

    fn check(&self, at: usize, len: usize) {
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.len),
            "bytes {at}..+{len} are outside a mapping of {} bytes",
            self.len
        );
    }
}

/// A range of a RAM block's memory that a [`Writer`](crate::Writer) can send without
/// copying it: the kernel reads it straight from guest memory when the writer's
/// buffer goes out (see [`Writer::to_fd`](crate::Writer::to_fd)). Made by
/// [`GuestRam::page_in_place`](super::GuestRam::page_in_place); holds the memory alive.
#[derive(Clone)]
pub struct GuestPages {
    map: Arc<Mapping>,
    at: usize,
    len: usize,
}

impl std::fmt::Debug for GuestPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestPages(0x{:x}+0x{:x})", self.at, self.len)
    }
}

impl GuestPages {
    /// Bytes `at..at + len` of `map`. Panics if the range is outside it.
    pub(crate) fn new(map: Arc<Mapping>, at: usize, len: usize) -> GuestPages {
        map.check(at, len);
        GuestPages { map, at, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the bytes into `out` (exactly [`len`](Self::len) bytes long).
    pub fn copy_to(&self, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            self.len,
            "copy_to needs a buffer of the same length"
        );
        self.map.copy_out(self.at, out);
    }

    /// Grows this range by `next` when `next` starts where this one ends in the same
    /// memory (so that a run of pages goes to the kernel as one piece); false, and no
    /// change, otherwise.
    pub(crate) fn try_extend(&mut self, next: &GuestPages) -> bool {
        let adjacent = Arc::ptr_eq(&self.map, &next.map) && self.at + self.len == next.at;
        if adjacent {
            self.len += next.len;
        }
        adjacent
    }

    /// Appends the bytes to `buf`.
    pub(crate) fn append_to(&self, buf: &mut Vec<u8>) {
        self.map.append_to(self.at, self.len, buf);
    }
}

/// A mapping registered with a KVM VM as a guest memory slot; the slot is deleted when
/// this is dropped, and the mapping is kept alive until then.
#[cfg(feature = "kvm")]
pub(crate) struct KvmSlot {
    vm: Arc<kvm_ioctls::VmFd>,
    slot: u32,
    guest_phys_addr: u64,
    map: Arc<Mapping>,
}

#[cfg(feature = "kvm")]
impl KvmSlot {
    /// Makes `map` guest memory at `guest_phys_addr` in slot `slot` of `vm`, with
    /// KVM's dirty log on.
    pub(crate) fn register(
        vm: Arc<kvm_ioctls::VmFd>,
        slot: u32,
        guest_phys_addr: u64,
        map: Arc<Mapping>,
    ) -> io::Result<KvmSlot> {
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot,
            flags: kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES,
            guest_phys_addr,
            memory_size: map.len as u64,
            userspace_addr: map.base.as_ptr() as u64,
        };
        // SAFETY: the region is the whole live mapping `map`, which the returned
        // `KvmSlot` keeps alive (an `Arc`) until its `Drop` has deleted the slot, so the
        // kernel never reaches unmapped or reused memory through it. KVM refuses a slot
        // that overlaps another one (EEXIST), which is the other requirement.
        unsafe { vm.set_user_memory_region(region) }.map_err(io::Error::from)?;
        Ok(KvmSlot {
            vm,
            slot,
            guest_phys_addr,
            map,
        })
    }

    /// The VM and slot number.
    pub(crate) fn vm(&self) -> &kvm_ioctls::VmFd {
        &self.vm
    }

    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }
}

#[cfg(feature = "kvm")]
impl Drop for KvmSlot {
    fn drop(&mut self) {
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: self.slot,
            flags: 0,
            guest_phys_addr: self.guest_phys_addr,
            memory_size: 0,
            userspace_addr: self.map.base.as_ptr() as u64,
        };
        // SAFETY: a size of 0 deletes the slot: the kernel stops using the mapping,
        // which `self.map` still holds alive during the call.
        let _ = unsafe { self.vm.set_user_memory_region(region) };
    }
}

/// Gives a stopped vCPU of `vm` the XSAVE area `xsave` (`KVM_SET_XSAVE`): the x87,
/// SSE, AVX and later register state. Refused (`Unsupported`) when KVM says this VM's
/// area is larger than the classic 4 KiB `kvm_xsave` (dynamically enabled features such
/// as AMX), which would make KVM read past it.
#[cfg(feature = "kvm")]
pub(crate) fn set_xsave(
    vm: &kvm_ioctls::VmFd,
    vcpu: &kvm_ioctls::VcpuFd,
    xsave: &kvm_bindings::kvm_xsave,
) -> io::Result<()> {
    // 0: the kernel predates KVM_CAP_XSAVE2 and its area is the classic size.
    let needed = vm.check_extension_int(kvm_ioctls::Cap::Xsave2);
    if usize::try_from(needed).unwrap_or(usize::MAX) > std::mem::size_of_val(xsave) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this VM's XSAVE area takes {needed} bytes, more than KVM_SET_XSAVE's 4 KiB"),
        ));
    }
    // SAFETY: kvm-ioctls marks this unsafe because KVM reads as many bytes as the VM's
    // XSAVE area takes, which may exceed `kvm_xsave` once a process has enabled dynamic
    // features. KVM has just said (KVM_CAP_XSAVE2) that this VM's area fits in the
    // `kvm_xsave` borrowed here, so KVM reads only inside it.
    unsafe { vcpu.set_xsave(xsave) }.map_err(io::Error::from)
}

/// One piece of a vectored write: bytes of an ordinary buffer, or guest memory.
pub(crate) enum Piece<'a> {
    Bytes(&'a [u8]),
    Guest(&'a GuestPages),
}

/// Guest memory registered with userfaultfd for missing pages (postcopy into memory
/// that vCPUs touch directly, as KVM's do): any access to a page that was never
/// placed, or was discarded, stops the accessing thread in the kernel until the page
/// is placed with [`place`](Self::place) or [`place_zero`](Self::place_zero), which
/// wake it. The registration ends when this is dropped (the descriptor is closed).
///
/// The kernel interface (`linux/userfaultfd.h`) is called directly: five ioctls on
/// fixed `repr(C)` structures (see [`uffd`]).
pub(crate) struct Userfault {
    fd: std::os::fd::OwnedFd,
    map: Arc<Mapping>,
}

impl std::fmt::Debug for Userfault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Userfault({:?})", self.map)
    }
}

/// `linux/userfaultfd.h`, as far as postcopy needs it: the structures are made of
/// 64-bit fields only; the ioctl numbers use the generic `_IOC` encoding, which x86_64,
/// aarch64 and riscv64 share (other architectures are refused at registration).
mod uffd {
    pub const API: u64 = 0xaa;
    pub const EVENT_PAGEFAULT: u8 = 0x12;
    pub const REGISTER_MODE_MISSING: u64 = 1;
    /// `_IOWR(0xaa, nr, size)` and `_IOR(0xaa, nr, size)`.
    const fn iowr(nr: u64, size: usize) -> u64 {
        (3 << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
    }
    pub const IOC_API: u64 = iowr(0x3f, std::mem::size_of::<Api>());
    pub const IOC_REGISTER: u64 = iowr(0x00, std::mem::size_of::<Register>());
    pub const IOC_WAKE: u64 = (2 << 30) | (16 << 16) | (0xaa << 8) | 0x02;
    pub const IOC_COPY: u64 = iowr(0x03, std::mem::size_of::<Copy>());
    pub const IOC_ZEROPAGE: u64 = iowr(0x04, std::mem::size_of::<Zeropage>());

    #[repr(C)]
    pub struct Api {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Range {
        pub start: u64,
        pub len: u64,
    }
    #[repr(C)]
    pub struct Register {
        pub range: Range,
        pub mode: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Copy {
        pub dst: u64,
        pub src: u64,
        pub len: u64,
        pub mode: u64,
        pub copy: i64,
    }
    #[repr(C)]
    pub struct Zeropage {
        pub range: Range,
        pub mode: u64,
        pub zeropage: i64,
    }
    /// `struct uffd_msg` (32 bytes): the event byte, then for a page fault the flags
    /// and the address at bytes 8 and 16.
    pub const MSG_SIZE: usize = 32;

    #[cfg(test)]
    mod tests {
        #[test]
        fn ioctl_numbers_are_the_kernels() {
            // From the kernel's headers (x86_64).
            assert_eq!(super::IOC_API, 0xc018_aa3f);
            assert_eq!(super::IOC_REGISTER, 0xc020_aa00);
            assert_eq!(super::IOC_WAKE, 0x8010_aa02);
            assert_eq!(super::IOC_COPY, 0xc028_aa03);
            assert_eq!(super::IOC_ZEROPAGE, 0xc020_aa04);
        }
    }
}

impl Userfault {
    /// Registers all of `map`. Huge pages are turned off for it first, as QEMU does:
    /// a missing page is placed 4 KiB at a time.
    pub(crate) fn register(map: Arc<Mapping>) -> io::Result<Userfault> {
        use std::os::fd::FromRawFd;
        if !cfg!(any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "riscv64"
        )) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "userfaultfd's ioctl numbers are encoded differently on this architecture",
            ));
        }
        // SAFETY: a plain system call with integer arguments; it returns a new
        // descriptor or -1.
        let raw =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor the kernel just made, owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as i32) };
        let uf = Userfault { fd, map };
        let mut api = uffd::Api {
            api: uffd::API,
            features: 0,
            ioctls: 0,
        };
        uf.ioctl(uffd::IOC_API, (&raw mut api).cast(), "UFFDIO_API")?;
        if uf.map.len > 0 {
            let _ = uf.map._map.advise(Advice::NoHugePage);
            let mut reg = uffd::Register {
                range: uf.range(0, uf.map.len),
                mode: uffd::REGISTER_MODE_MISSING,
                ioctls: 0,
            };
            uf.ioctl(uffd::IOC_REGISTER, (&raw mut reg).cast(), "UFFDIO_REGISTER")?;
        }
        Ok(uf)
    }

    fn range(&self, at: usize, len: usize) -> uffd::Range {
        uffd::Range {
            start: self.map.base.as_ptr() as u64 + at as u64,
            len: len as u64,
        }
    }

    /// One userfaultfd ioctl on `arg`, a live structure of the size `cmd` encodes.
    fn ioctl(&self, cmd: u64, arg: *mut libc::c_void, name: &str) -> io::Result<()> {
        loop {
            // SAFETY: every caller passes a pointer to a live `repr(C)` structure of
            // the type `cmd` is defined with (the sizes are in the numbers, checked by
            // a test against the kernel's); the kernel reads and writes only that. The
            // ranges named in it are inside the registered mapping (callers check), and
            // COPY/ZEROPAGE only fill pages that are not mapped yet.
            let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as _, arg) };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                _ => return Err(io::Error::new(e.kind(), format!("{name}: {e}"))),
            }
        }
    }

    /// Places `data` (whole pages) at byte `at`, atomically, and wakes the threads that
    /// wait for it. `Ok(false)` when a page there is already mapped (nothing placed).
    pub(crate) fn place(&self, at: usize, data: &[u8]) -> io::Result<bool> {
        self.map.check(at, data.len());
        let mut copy = uffd::Copy {
            dst: self.range(at, 0).start,
            src: data.as_ptr() as u64,
            len: data.len() as u64,
            mode: 0,
            copy: 0,
        };
        match self.ioctl(uffd::IOC_COPY, (&raw mut copy).cast(), "UFFDIO_COPY") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Places zero pages over `len` bytes at `at` and wakes their waiters; `Ok(false)`
    /// when a page there is already mapped.
    pub(crate) fn place_zero(&self, at: usize, len: usize) -> io::Result<bool> {
        self.map.check(at, len);
        let mut zero = uffd::Zeropage {
            range: self.range(at, len),
            mode: 0,
            zeropage: 0,
        };
        match self.ioctl(
            uffd::IOC_ZEROPAGE,
            (&raw mut zero).cast(),
            "UFFDIO_ZEROPAGE",
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wakes the threads waiting on `len` bytes at `at` (their page was placed by
    /// another way in the meantime).
    pub(crate) fn wake(&self, at: usize, len: usize) -> io::Result<()> {
        self.map.check(at, len);
        let mut range = self.range(at, len);
        self.ioctl(uffd::IOC_WAKE, (&raw mut range).cast(), "UFFDIO_WAKE")
    }

    /// Waits up to `timeout_ms` for an access to a missing page; its byte offset in
    /// the mapping, or `None` after the timeout.
    pub(crate) fn next_fault(&self, timeout_ms: i32) -> io::Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one live, initialised `pollfd`, as the count says.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ready <= 0 {
            let e = io::Error::last_os_error();
            return match ready {
                0 => Ok(None),
                _ if e.kind() == io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let mut msg = [0u8; uffd::MSG_SIZE];
        // SAFETY: `msg` is a live buffer of the length given; the kernel writes at
        // most one message of that size into it.
        let got = unsafe { libc::read(self.fd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        if got as usize != uffd::MSG_SIZE || msg[0] != uffd::EVENT_PAGEFAULT {
            return Ok(None);
        }
        let addr = u64::from_ne_bytes(msg[16..24].try_into().expect("8 bytes"));
        let at = addr.wrapping_sub(self.map.base.as_ptr() as u64) as usize;
        Ok((at < self.map.len).then_some(at))
    }
}

/// The most pieces one `sendmsg`/`writev` takes (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Writes every piece, in order, to `fd`: guest memory goes from the mapping to the
/// kernel without a copy in this process. Sockets are written with `sendmsg` and
/// `MSG_NOSIGNAL` (a closed peer is an error, not a `SIGPIPE`), anything else with
/// `writev`. Retries on `EINTR`; a send timeout (`SO_SNDTIMEO`) comes back as
/// [`io::ErrorKind::WouldBlock`], as from `std`'s own writes.
pub(crate) fn write_all_vectored(fd: BorrowedFd<'_>, pieces: &[Piece<'_>]) -> io::Result<()> {
    // (pointer, length) of each piece, consumed from the front as the kernel takes them.
    let mut todo: Vec<(*const u8, usize)> = pieces
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => (b.as_ptr(), b.len()),
            Piece::Guest(g) => {
                // SAFETY: `g.at + g.len` is inside `g.map` (checked when `g` was made),
                // and `g` keeps the mapping alive for as long as `pieces` is borrowed,
                // which covers every use of the pointer below.
                (unsafe { g.map.base.as_ptr().add(g.at) }.cast_const(), g.len)
            }
        })
        .filter(|&(_, len)| len > 0)
        .collect();
    let mut first = 0;
    let mut socket = true;
    while first < todo.len() {
        let batch = &todo[first..todo.len().min(first + MAX_IOVECS)];
        let iov: Vec<libc::iovec> = batch
            .iter()
            .map(|&(ptr, len)| libc::iovec {
                iov_base: ptr.cast_mut().cast(),
                iov_len: len,
            })
            .collect();
        let sent = if socket {
            // SAFETY: a zeroed `msghdr` is valid (no name, no control data); `iov`
            // points to `iov.len()` iovecs describing memory that stays valid during
            // the call (ordinary buffers borrowed by `pieces`, guest memory kept alive
            // by its `GuestPages`). The kernel only reads it.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_ptr().cast_mut();
                msg.msg_iovlen = iov.len() as _;
                libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
            }
        } else {
            // SAFETY: as for `sendmsg`: `iov` describes `iov.len()` live ranges that
            // the kernel only reads.
            unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) }
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOTSOCK) if socket => {
                    socket = false;
                    continue;
                }
                _ => return Err(e),
            }
        }
        if sent == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut sent = sent as usize;
        while sent > 0 {
            let (ptr, len) = &mut todo[first];
            if sent >= *len {
                sent -= *len;
                first += 1;
            } else {
                // SAFETY: `sent < len`, so the pointer stays inside the same range.
                *ptr = unsafe { ptr.add(sent) };
                *len -= sent;
                sent = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::Ordering;

    #[test]
    fn starts_zeroed_and_is_shared_between_threads() {
        let m = Mapping::anonymous(3 * 4096).unwrap();
        let words = m.words();
        assert_eq!(words.len(), 3 * 512);
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        assert_eq!(words.as_ptr() as usize % 4096, 0, "page-aligned");
        std::thread::scope(|s| {
            for t in 0..3u64 {
                s.spawn(move || {
                    for i in 0..512 {
                        words[(t * 512 + i) as usize].store(t * 1000 + i, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(words[512 + 7].load(Ordering::Relaxed), 1007);
    }

    #[test]
    fn an_empty_mapping_has_no_words() {
        assert!(Mapping::anonymous(0).unwrap().words().is_empty());
    }

    #[test]
    fn copies_see_the_words_and_the_words_see_the_copies() {
        let m = Mapping::anonymous(8192).unwrap();
        m.words()[513].store(u64::from_ne_bytes(*b"abcdefgh"), Ordering::Relaxed);
        let mut out = [0u8; 10];
        m.copy_out(4096 + 7, &mut out);
        assert_eq!(&out, b"\0abcdefgh\0");
        m.copy_in(3, b"xyz12");
        assert_eq!(
            m.words()[0].load(Ordering::Relaxed).to_ne_bytes(),
            *b"\0\0\0xyz12"
        );
    }

    #[test]
    fn appending_copies_after_what_the_buffer_holds() {
        let m = Mapping::anonymous(4096).unwrap();
        m.copy_in(100, b"guest");
        let mut buf = b"hdr".to_vec();
        m.append_to(100, 5, &mut buf);
        assert_eq!(buf, b"hdrguest");
    }

    #[test]
    #[should_panic(expected = "outside a mapping")]
    fn a_copy_past_the_end_panics() {
        Mapping::anonymous(4096)
            .unwrap()
            .copy_out(4090, &mut [0u8; 7]);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot call sendmsg or writev")]
    fn vectored_writes_send_buffers_and_guest_memory_in_order() {
        let map = Arc::new(Mapping::anonymous(2 * 4096).unwrap());
        map.copy_in(0, &[1u8; 4096]);
        map.copy_in(4096, &[2u8; 4096]);
        let a = GuestPages::new(map.clone(), 0, 4096);
        let b = GuestPages::new(map.clone(), 4096 + 100, 50);
        for socket in [true, false] {
            let mut pieces = Vec::new();
            // More pieces than one call takes, so the batches are exercised too.
            for _ in 0..600 {
                pieces.push(Piece::Bytes(b"hdr"));
                pieces.push(Piece::Guest(&a));
                pieces.push(Piece::Bytes(b""));
                pieces.push(Piece::Guest(&b));
            }
            let mut expected = Vec::new();
            for _ in 0..600 {
                expected.extend_from_slice(b"hdr");
                expected.extend_from_slice(&[1u8; 4096]);
                expected.extend_from_slice(&[2u8; 50]);
            }
            let got = if socket {
                let (tx, mut rx) = std::os::unix::net::UnixStream::pair().unwrap();
                let reader = std::thread::spawn(move || {
                    let mut v = Vec::new();
                    rx.read_to_end(&mut v).unwrap();
                    v
                });
                write_all_vectored(std::os::fd::AsFd::as_fd(&tx), &pieces).unwrap();
                drop(tx);
                reader.join().unwrap()
            } else {
                let path =
                    std::env::temp_dir().join(format!("vmstate-vectored-{}", std::process::id()));
                let f = std::fs::File::create(&path).unwrap();
                write_all_vectored(std::os::fd::AsFd::as_fd(&f), &pieces).unwrap();
                let v = std::fs::read(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                v
            };
            assert!(got == expected, "socket {socket}: {} bytes", got.len());
        }
    }
}
