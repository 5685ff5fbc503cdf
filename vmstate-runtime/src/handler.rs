//! The iterative handler trait: state sent in rounds while the guest runs (QEMU's
//! `SaveVMHandlers`), RAM being the main one.
//!
//! # Contract
//!
//! On the source, for one migration or snapshot, the stream engine calls:
//!
//! 1. [`save_setup`](IterativeHandler::save_setup) once, writing the START section
//!    payload (for RAM: the block list). Dirty tracking starts here.
//! 2. Any number of rounds, each made of
//!    [`pending`](IterativeHandler::pending) (cheap, may be an estimate; with
//!    `exact = true` the handler synchronises first, as RAM syncs its dirty bitmap) and
//!    [`save_iterate`](IterativeHandler::save_iterate), writing one PART payload of
//!    roughly at most `budget` bytes and saying whether anything is left.
//! 3. With the guest stopped, [`save_complete`](IterativeHandler::save_complete) once,
//!    writing the END payload: everything still pending.
//! 4. [`save_cleanup`](IterativeHandler::save_cleanup) once, on success, on failure
//!    and on cancellation, even if setup never ran. After it the handler must be usable
//!    for another migration.
//!
//! Every payload must be self-delimiting (the loader reads it with no length): RAM ends
//! each payload with its EOS flag.
//!
//! On the destination: [`load_setup`](IterativeHandler::load_setup) once before the
//! first section, [`load`](IterativeHandler::load) for each START/PART/END section of
//! this handler with the version from the START header,
//! [`switchover_start`](IterativeHandler::switchover_start) when the source announces
//! the switchover, and [`load_cleanup`](IterativeHandler::load_cleanup) at the end,
//! whether the load succeeded or not.
//!
//! An error from any `save_*` fails the save: the engine stops writing, runs
//! `save_cleanup` on every handler, and the guest keeps running on the source. An error
//! from `load` fails the load with the section named in the error.

use std::sync::Arc;

use crate::error::Result;
use crate::ram::postcopy::{PageRequests, PostcopyIncoming};
use crate::wire::{Reader, Writer};

/// Which kind of section a payload belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The START section (setup).
    Start,
    /// A PART section (one round).
    Part,
    /// The END section (completion).
    End,
}

/// Bytes a handler still has to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Bytes that must be sent before the guest can run on the destination.
    pub must_precopy: u64,
    /// Bytes that could be sent after switchover (postcopy); 0 for precopy-only handlers.
    pub can_postcopy: u64,
}

impl Pending {
    /// Both counters together.
    pub fn total(&self) -> u64 {
        self.must_precopy + self.can_postcopy
    }
}

/// What a round of iteration left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IterationStatus {
    /// Nothing was left when the round ended (a full scan found nothing dirty).
    Done,
    /// More remains; call again.
    More,
}

/// State that is sent in rounds while the guest runs. See the module docs for the
/// contract.
pub trait IterativeHandler: Send {
    /// Whether the handler takes part in this migration. Inactive handlers get no
    /// sections (QEMU's `is_active`).
    fn is_active(&self) -> bool {
        true
    }

    /// Writes the START payload and starts tracking changes.
    fn save_setup(&mut self, w: &mut Writer<'_>) -> Result<()>;

    /// Bytes still to send. With `exact`, synchronise first (may be slower).
    fn pending(&mut self, exact: bool) -> Pending;

    /// Writes one PART payload of about `budget` bytes at most.
    fn save_iterate(&mut self, w: &mut Writer<'_>, budget: u64) -> Result<IterationStatus>;

    /// Writes the END payload with everything still pending. The guest is stopped.
    fn save_complete(&mut self, w: &mut Writer<'_>) -> Result<()>;

    /// Ends a save, successful or not.
    fn save_cleanup(&mut self) {}

    /// Prepares for an incoming stream.
    fn load_setup(&mut self) -> Result<()> {
        Ok(())
    }

    /// Reads one section payload written by this handler at `version`.
    fn load(&mut self, r: &mut Reader<'_>, version: u32, phase: Phase) -> Result<()>;

    /// The source announced the switchover (QEMU's SWITCHOVER_START command).
    fn switchover_start(&mut self) {}

    /// Whether the destination holds back QEMU's `SWITCHOVER_ACK` until this handler is
    /// [ready](Self::switchover_ready) (QEMU's `switchover_ack_needed`, used by VFIO to
    /// load its setup data before the guest stops). Asked whenever the destination
    /// checks whether it may send the ack; must not change during a load. Default: no.
    fn switchover_ack_needed(&self) -> bool {
        false
    }

    /// With [`switchover_ack_needed`](Self::switchover_ack_needed): whether enough has
    /// been loaded for the source to stop the guest. Asked after each of this handler's
    /// sections; once every such handler says yes, the destination sends
    /// `SWITCHOVER_ACK` (QEMU's `qemu_loadvm_approve_switchover`). Default: yes.
    fn switchover_ready(&self) -> bool {
        true
    }

    /// Ends a load, successful or not.
    fn load_cleanup(&mut self) {}

    /// Source: whether this handler keeps sending after the switch to postcopy
    /// (QEMU's `has_postcopy`). Handlers that cannot send their END section at the
    /// switch instead. Default: no.
    fn has_postcopy(&self) -> bool {
        false
    }

    /// Source, just before the switch to postcopy, with the guest still running: opens
    /// what the switch needs (a postcopy-preempt channel), so that the downtime does
    /// not include it and a failure leaves the stream as it was. Default: nothing.
    fn postcopy_prepare(&mut self) -> Result<()> {
        Ok(())
    }

    /// Source, at the switch to postcopy with the guest stopped: from now on
    /// [`save_iterate`](Self::save_iterate) serves the destination's page requests
    /// first. Returns, per RAM block, the byte ranges the destination must discard
    /// (what is still pending: its copy is stale or it never had it). Default: none.
    fn postcopy_start(&mut self) -> Result<crate::ram::postcopy::Discards> {
        Ok(Vec::new())
    }

    /// Source: where the return path puts the destination's page requests, for a
    /// handler that serves them. Default: none.
    fn page_requests(&self) -> Option<Arc<PageRequests>> {
        None
    }

    /// Destination: the source announced postcopy (`POSTCOPY_ADVISE`, with its page
    /// sizes when it carried them): get ready to run the guest before every page is
    /// here, asking for missing ones through `incoming`. Default: nothing to do.
    fn load_postcopy_advise(
        &mut self,
        _incoming: &Arc<PostcopyIncoming>,
        _page_sizes: Option<(u64, u64)>,
    ) -> Result<()> {
        Ok(())
    }

    /// Destination: `POSTCOPY_RAM_DISCARD` for RAM block `block`: drop those byte
    /// ranges, newer contents will come. `Ok(false)` when the block is not this
    /// handler's (the default).
    fn load_postcopy_discard(&mut self, _block: &str, _ranges: &[(u64, u64)]) -> Result<bool> {
        Ok(false)
    }
}

impl<H: IterativeHandler> IterativeHandler for Arc<std::sync::Mutex<H>> {
    fn is_active(&self) -> bool {
        crate::registry::lock(self).is_active()
    }
    fn save_setup(&mut self, w: &mut Writer<'_>) -> Result<()> {
        crate::registry::lock(self).save_setup(w)
    }
    fn pending(&mut self, exact: bool) -> Pending {
        crate::registry::lock(self).pending(exact)
    }
    fn save_iterate(&mut self, w: &mut Writer<'_>, budget: u64) -> Result<IterationStatus> {
        crate::registry::lock(self).save_iterate(w, budget)
    }
    fn save_complete(&mut self, w: &mut Writer<'_>) -> Result<()> {
        crate::registry::lock(self).save_complete(w)
    }
    fn save_cleanup(&mut self) {
        crate::registry::lock(self).save_cleanup()
    }
    fn load_setup(&mut self) -> Result<()> {
        crate::registry::lock(self).load_setup()
    }
    fn load(&mut self, r: &mut Reader<'_>, version: u32, phase: Phase) -> Result<()> {
        crate::registry::lock(self).load(r, version, phase)
    }
    fn switchover_start(&mut self) {
        crate::registry::lock(self).switchover_start()
    }
    fn switchover_ack_needed(&self) -> bool {
        crate::registry::lock(self).switchover_ack_needed()
    }
    fn switchover_ready(&self) -> bool {
        crate::registry::lock(self).switchover_ready()
    }
    fn load_cleanup(&mut self) {
        crate::registry::lock(self).load_cleanup()
    }
    fn has_postcopy(&self) -> bool {
        crate::registry::lock(self).has_postcopy()
    }
    fn postcopy_prepare(&mut self) -> Result<()> {
        crate::registry::lock(self).postcopy_prepare()
    }
    fn postcopy_start(&mut self) -> Result<crate::ram::postcopy::Discards> {
        crate::registry::lock(self).postcopy_start()
    }
    fn page_requests(&self) -> Option<Arc<PageRequests>> {
        crate::registry::lock(self).page_requests()
    }
    fn load_postcopy_advise(
        &mut self,
        incoming: &Arc<PostcopyIncoming>,
        page_sizes: Option<(u64, u64)>,
    ) -> Result<()> {
        crate::registry::lock(self).load_postcopy_advise(incoming, page_sizes)
    }
    fn load_postcopy_discard(&mut self, block: &str, ranges: &[(u64, u64)]) -> Result<bool> {
        crate::registry::lock(self).load_postcopy_discard(block, ranges)
    }
}
