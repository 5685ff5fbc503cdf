//! Trees of key/value pairs: QEMU's `VMSTATE_GTREE_V` and `VMSTATE_GTREE_DIRECT_KEY_V`,
//! held in a `BTreeMap`.
//!
//! On the wire: a be32 node count, then per node `0x01`, the key and the value, then
//! `0x00`. A key is either a described struct (`VMSTATE_GTREE_V`) or a direct be64
//! integer (`VMSTATE_GTREE_DIRECT_KEY_V`, a `u64` key here); nodes go in key order,
//! which is QEMU's comparator order when the key's `Ord` agrees with it. As for lists,
//! keys and values are saved at their own version and loaded at the field's (`since`;
//! without one, at their own). A count that disagrees with the nodes sent is an error,
//! as in QEMU ("inconsistent stream"); a key sent twice is an error too (QEMU silently
//! replaces the first value).
//!
//! ```
//! use std::collections::BTreeMap;
//! use vmstate::VmState;
//!
//! #[derive(VmState, Default, Debug, PartialEq)]
//! #[vmstate(name = "domain")]
//! struct Domain { id: u32 }
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "iommu")]
//! struct Iommu {
//!     #[vmstate(gtree)]
//!     domains: BTreeMap<u64, Domain>,
//! }
//!
//! let mut dev = Iommu { domains: BTreeMap::from([(5, Domain { id: 5 })]) };
//! let bytes = dev.to_bytes().unwrap();
//! assert_eq!(bytes, [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 5, 0]);
//! let mut back = Iommu::default();
//! back.load_bytes(&bytes, 1).unwrap();
//! assert_eq!(back.domains[&5], Domain { id: 5 });
//! ```

use std::collections::BTreeMap;

use crate::derive_support::{check_version, save_single};
use crate::description::{Field, VmStateDescription};
use crate::error::{Error, Result};
use crate::save_context::SaveContext;
use crate::state::VmState;
use crate::wire::{Reader, Writer};

/// The marker before each node.
const MORE: u8 = 0x01;
/// The marker after the last node.
const END: u8 = 0x00;

/// A key of a `gtree` field: a direct be64 integer (`u64`) or a described struct.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the key of a `gtree` field",
    label = "a gtree key is a `u64` (QEMU's direct key) or a type that derives `VmState`, `Ord`, `Default` and `Clone`"
)]
pub trait GtreeKey: Ord + Sized {
    /// The key's description; `None` for a direct key, which the vmdesc does not
    /// describe.
    const DESCRIPTION: Option<&'static VmStateDescription>;
    /// Writes the key.
    fn save_key<C: SaveContext>(&self, w: &mut Writer<'_>, ctx: &mut C) -> Result<()>;
    /// Reads a key written at `version`.
    fn load_key(r: &mut Reader<'_>, version: u32) -> Result<Self>;
}

impl GtreeKey for u64 {
    const DESCRIPTION: Option<&'static VmStateDescription> = None;
    fn save_key<C: SaveContext>(&self, w: &mut Writer<'_>, _: &mut C) -> Result<()> {
        w.put_be64(*self);
        Ok(())
    }
    fn load_key(r: &mut Reader<'_>, _: u32) -> Result<Self> {
        r.get_be64()
    }
}

impl<T: VmState + Ord + Default + Clone> GtreeKey for T {
    const DESCRIPTION: Option<&'static VmStateDescription> = Some(T::DESCRIPTION);
    fn save_key<C: SaveContext>(&self, w: &mut Writer<'_>, ctx: &mut C) -> Result<()> {
        // Saving may run hooks that take `&mut self`; a map's keys are shared.
        self.clone().save_state(w, ctx)
    }
    fn load_key(r: &mut Reader<'_>, version: u32) -> Result<Self> {
        let mut key = T::default();
        key.load_state(r, version)?;
        Ok(key)
    }
}

/// A map a `gtree` field can hold its nodes in.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold a `gtree` field",
    label = "a gtree field is a `BTreeMap<K, V>` whose values derive `VmState`"
)]
pub trait VmTree {
    /// The key type.
    type Key: GtreeKey;
    /// The value type, with its own description.
    type Value: VmState + Default;
    /// The number of nodes.
    fn node_count(&self) -> usize;
    /// Every node, in key order.
    fn nodes_mut(&mut self) -> impl Iterator<Item = (&Self::Key, &mut Self::Value)>;
    /// Empties the tree before a load.
    fn clear(&mut self);
    /// Adds a loaded node; returns false if the key was there already.
    fn insert_new(&mut self, key: Self::Key, value: Self::Value) -> bool;
}

impl<K: GtreeKey, V: VmState + Default> VmTree for BTreeMap<K, V> {
    type Key = K;
    type Value = V;
    fn node_count(&self) -> usize {
        self.len()
    }
    fn nodes_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.iter_mut()
    }
    fn clear(&mut self) {
        BTreeMap::clear(self)
    }
    fn insert_new(&mut self, key: K, value: V) -> bool {
        match self.entry(key) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(value);
                true
            }
            std::collections::btree_map::Entry::Occupied(_) => false,
        }
    }
}

/// Saves a `gtree` field: the node count, each node's marker, key and value, the end
/// marker. Described as one vmdesc entry holding each node's key and value descriptions.
pub fn save_tree<T: VmTree, C: SaveContext>(
    tree: &mut T,
    field: &'static Field,
    w: &mut Writer<'_>,
    ctx: &mut C,
) -> Result<()> {
    let count = u32::try_from(tree.node_count())
        .map_err(|_| Error::invalid("gtree", "more than 4294967295 nodes"))?;
    save_single(field, w, ctx, |w, ctx| {
        w.put_be32(count);
        for (i, (key, value)) in tree.nodes_mut().enumerate() {
            w.put_u8(MORE);
            key.save_key(w, ctx).map_err(|e| e.at_index(i))?;
            value.save_state(w, ctx).map_err(|e| e.at_index(i))?;
        }
        w.put_u8(END);
        Ok(())
    })
}

/// Loads a `gtree` field written by [`save_tree`]: its nodes replace the tree's, keys
/// and values loaded at `version` (the field's `since`; without one, each type's own
/// version). A count that disagrees with the nodes, or a key sent twice, is an error.
pub fn load_tree<T: VmTree>(tree: &mut T, version: Option<u32>, r: &mut Reader<'_>) -> Result<()> {
    let value_version = version.unwrap_or(T::Value::DESCRIPTION.version);
    let key_version = match T::Key::DESCRIPTION {
        Some(d) => {
            let v = version.unwrap_or(d.version);
            check_version(d, v, r)?;
            v
        }
        None => 0,
    };
    check_version(T::Value::DESCRIPTION, value_version, r)?;
    let at = r.position();
    let announced = r.get_be32()?;
    if announced > i32::MAX as u32 {
        return Err(Error::invalid(
            "gtree",
            format!("node count {announced} is negative as QEMU reads it (a signed int)"),
        )
        .at_offset(at));
    }
    tree.clear();
    let node_size = (std::mem::size_of::<T::Key>() + std::mem::size_of::<T::Value>()).max(1) as u64;
    let mut count: u32 = 0;
    loop {
        let at = r.position();
        if r.get_u8()? == END {
            break;
        }
        if count == announced {
            return Err(Error::invalid(
                "gtree",
                format!("inconsistent stream: more nodes than the {announced} announced"),
            )
            .at_offset(at));
        }
        r.check_alloc(u64::from(count) + 1, node_size)
            .map_err(|e| e.at_offset(at))?;
        let index = count as usize;
        let key = T::Key::load_key(r, key_version).map_err(|e| e.at_index(index))?;
        let mut value = T::Value::default();
        value
            .load_state(r, value_version)
            .map_err(|e| e.at_index(index))?;
        if !tree.insert_new(key, value) {
            return Err(Error::invalid("gtree", "a key sent twice")
                .at_offset(at)
                .at_index(index));
        }
        count += 1;
    }
    if count != announced {
        return Err(Error::invalid(
            "gtree",
            format!("inconsistent stream: {announced} nodes announced, {count} sent"),
        )
        .at_offset(at));
    }
    Ok(())
}
