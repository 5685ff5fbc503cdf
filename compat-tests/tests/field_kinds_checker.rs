//! The checker on dumps of the container and indirection kinds (qtailq, gtree, arrays of
//! pointers, temporaries). A `-dump-vmstate` entry carries no type, so the checker sees
//! these kinds as QEMU's `vmstate-static-checker.py` does (see
//! `docs/notes/qemu-field-kinds.md`, section 1.5): a field with a `Description` is
//! compared through it (sizes ignored), an array of primitive pointers by its size,
//! which is a pointer's.

use std::collections::{BTreeMap, VecDeque};

use vmstate::schema::Dump;
use vmstate::{Tmp, VmState, VmStateDescription};
use vmstate_tools::check::{self, CheckOptions, Problem, ProblemKind};

fn problems(old: &'static VmStateDescription, new: &'static VmStateDescription) -> Vec<Problem> {
    let dump = |d| Dump::from_descriptions("m", [("dev", d)]);
    check::check(&dump(old), &dump(new), &CheckOptions::default())
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct PointersV1 {
    #[vmstate(array_of_pointer)]
    regs: [Option<i32>; 4],
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct PlainV1 {
    regs: [i32; 4],
}

#[test]
fn an_array_of_pointers_turned_plain_is_a_size_mismatch_as_in_qemu() {
    // Wire-compatible when no element is absent, but QEMU's checker compares the dumped
    // size: 8 (a pointer) against 4.
    let p = problems(PointersV1::DESCRIPTION, PlainV1::DESCRIPTION);
    assert!(
        p.iter()
            .any(|p| matches!(p.kind, ProblemKind::SizeMismatch { src: 8, dest: 4 })),
        "{p:?}"
    );
}

#[derive(VmState, Default)]
#[vmstate(name = "dev/tmp", version = 0)]
struct TmpV1 {
    a: u32,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev/tmp", version = 0)]
struct TmpV2 {
    a: u32,
    b: u32,
}

macro_rules! with_tmp {
    ($name:ident, $tmp:ty) => {
        #[derive(VmState, Default)]
        #[vmstate(name = "dev")]
        struct $name {
            #[vmstate(to_tmp = Self::to_tmp, from_tmp = Self::apply_tmp)]
            tmp: Tmp<$tmp>,
        }
        impl $name {
            fn to_tmp(&self) -> $tmp {
                <$tmp>::default()
            }
            fn apply_tmp(&mut self, _: $tmp) -> Result<(), String> {
                Ok(())
            }
        }
    };
}

with_tmp!(WithTmpV1, TmpV1);
with_tmp!(WithTmpV2, TmpV2);

#[test]
fn a_field_added_to_a_temporary_without_a_version_is_caught() {
    let p = problems(WithTmpV1::DESCRIPTION, WithTmpV2::DESCRIPTION);
    assert!(!p.is_empty(), "a new field in the temporary went unnoticed");
    assert!(
        p.iter().all(|p| p.description_name() == Some("dev/tmp")),
        "{p:?}"
    );
    assert!(problems(WithTmpV1::DESCRIPTION, WithTmpV1::DESCRIPTION).is_empty());
}

#[derive(VmState, Default, Clone)]
#[vmstate(name = "elem", version = 1)]
struct ElemV1 {
    a: u16,
}

#[derive(VmState, Default, Clone)]
#[vmstate(name = "elem", version = 1)]
struct ElemV2 {
    a: u32,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct ListV1 {
    #[vmstate(qtailq)]
    q: VecDeque<ElemV1>,
    #[vmstate(gtree)]
    t: BTreeMap<u64, ElemV1>,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct ListV2 {
    #[vmstate(qtailq)]
    q: VecDeque<ElemV2>,
    #[vmstate(gtree)]
    t: BTreeMap<u64, ElemV2>,
}

#[test]
fn a_widened_list_or_tree_element_is_caught_through_its_description() {
    let p = problems(ListV1::DESCRIPTION, ListV2::DESCRIPTION);
    // One size mismatch inside `elem` per field (the qtailq's and the gtree's values).
    let inside: Vec<_> = p
        .iter()
        .filter(|p| {
            p.description_name() == Some("elem")
                && matches!(p.kind, ProblemKind::SizeMismatch { src: 2, dest: 4 })
        })
        .collect();
    assert_eq!(inside.len(), 2, "{p:?}");
}
