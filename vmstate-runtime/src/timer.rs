//! QEMU's `timer` type: a be64 expiry time in nanoseconds, -1 when not armed.

use crate::description::{FieldType, infos};
use crate::error::Result;
use crate::save_context::SaveContext;
use crate::state::VmElem;
use crate::wire::{Reader, Writer};

/// The migrated state of a timer: when it expires, or that it is not armed.
///
/// On the wire it is QEMU's `timer` (be64 nanoseconds, `-1` = not armed), so a device
/// keeps its runtime timer out of the state (`#[vmstate(skip)]`) and mirrors it here in
/// `pre_save` / re-arms it in `post_load`.
///
/// ```
/// use vmstate::Timer;
/// assert_eq!(Timer::armed_at(5_000).expiry_ns(), Some(5_000));
/// assert_eq!(Timer::armed_at(-1), Timer::disarmed());
/// assert!(!Timer::default().is_armed());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timer {
    expiry_ns: Option<i64>,
}

impl Timer {
    /// A timer that is not armed.
    pub const fn disarmed() -> Self {
        Timer { expiry_ns: None }
    }

    /// A timer armed to expire at `expiry_ns` (-1 means not armed, as on the wire).
    pub const fn armed_at(expiry_ns: i64) -> Self {
        Timer {
            expiry_ns: if expiry_ns == -1 {
                None
            } else {
                Some(expiry_ns)
            },
        }
    }

    /// The expiry time, or `None` when not armed.
    pub const fn expiry_ns(&self) -> Option<i64> {
        self.expiry_ns
    }

    /// Whether the timer is armed.
    pub const fn is_armed(&self) -> bool {
        self.expiry_ns.is_some()
    }

    /// The wire value: the expiry, or -1.
    pub const fn to_wire(&self) -> i64 {
        match self.expiry_ns {
            Some(t) => t,
            None => -1,
        }
    }
}

impl VmElem for Timer {
    const TYPE: FieldType = FieldType::Info(infos::TIMER);

    #[inline]
    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, _: &mut C) -> Result<()> {
        w.put_be64(self.to_wire() as u64);
        Ok(())
    }

    #[inline]
    fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()> {
        *self = Timer::armed_at(r.get_be64()? as i64);
        Ok(())
    }

    crate::state::raw_prim!(u64, |v| v.to_wire() as u64, |v| Timer::armed_at(v as i64));
}
