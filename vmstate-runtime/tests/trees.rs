//! `gtree` fields against the byte vectors of QEMU 10's `tests/unit/test-vmstate.c`
//! (`/vmstate/gtree/save/savedomain` and `saveiommu`, transcribed in
//! `docs/notes/qemu-field-kinds.md`; the harness's trailing EOF byte is left out), the
//! vmdesc QEMU's writer produces, and the load errors.

use std::collections::BTreeMap;

use vmstate::json::Json;
use vmstate::qjson::Style;
use vmstate::{Describer, VmState, Writer};

#[derive(VmState, Default, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[vmstate(name = "interval", version = 1)]
struct Interval {
    low: u64,
    high: u64,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "mapping", version = 1)]
struct Mapping {
    phys_addr: u64,
    flags: u32,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "domain", version = 1)]
struct Domain {
    id: i32,
    #[vmstate(gtree, since = 1)]
    mappings: BTreeMap<Interval, Mapping>,
}

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "iommu", version = 1)]
struct Iommu {
    id: i32,
    #[vmstate(gtree, since = 1)]
    domains: BTreeMap<u64, Domain>,
}

fn map(nodes: &[(u64, u64, u64, u32)]) -> BTreeMap<Interval, Mapping> {
    nodes
        .iter()
        .map(|&(low, high, phys_addr, flags)| {
            (Interval { low, high }, Mapping { phys_addr, flags })
        })
        .collect()
}

fn domain6() -> Domain {
    Domain {
        id: 6,
        mappings: map(&[(0x1000, 0x1fff, 0xa000, 1), (0x4000, 0x4fff, 0xe0000, 2)]),
    }
}

fn be64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn node(low: u64, high: u64, phys: u64, flags: u32) -> Vec<u8> {
    let mut v = vec![1];
    v.extend(be64(low));
    v.extend(be64(high));
    v.extend(be64(phys));
    v.extend(flags.to_be_bytes());
    v
}

/// `/vmstate/gtree/save/savedomain` (67 bytes).
fn domain6_bytes() -> Vec<u8> {
    let mut v = vec![0, 0, 0, 6, 0, 0, 0, 2];
    v.extend(node(0x1000, 0x1fff, 0xa000, 1));
    v.extend(node(0x4000, 0x4fff, 0xe0000, 2));
    v.push(0);
    v
}

#[test]
fn a_struct_keyed_tree_saves_qemus_bytes_and_loads_them() {
    let bytes = domain6_bytes();
    assert_eq!(bytes.len(), 67);
    assert_eq!(domain6().to_bytes().unwrap(), bytes);
    let mut back = Domain::default();
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back, domain6());
}

#[test]
fn a_direct_keyed_tree_of_trees_saves_qemus_bytes_in_key_order() {
    // `/vmstate/gtree/save/saveiommu`: key 6 inserted first, key 5 saved first.
    let mut iommu = Iommu {
        id: 7,
        domains: BTreeMap::new(),
    };
    iommu.domains.insert(6, domain6());
    iommu.domains.insert(
        5,
        Domain {
            id: 5,
            mappings: map(&[(0x100_0000, 0x1ff_ffff, 0xf00_0000, 3)]),
        },
    );
    let mut expected = vec![0, 0, 0, 7, 0, 0, 0, 2, 1];
    expected.extend(be64(5));
    expected.extend([0, 0, 0, 5, 0, 0, 0, 1]);
    expected.extend(node(0x100_0000, 0x1ff_ffff, 0xf00_0000, 3));
    expected.extend([0, 1]);
    expected.extend(be64(6));
    expected.extend(domain6_bytes());
    expected.push(0);
    assert_eq!(expected.len(), 132);
    assert_eq!(iommu.to_bytes().unwrap(), expected);
    let mut back = Iommu::default();
    back.load_bytes(&expected, 1).unwrap();
    assert_eq!(back, iommu);
}

#[test]
fn the_vmdesc_writes_key_and_value_descriptions_per_node() {
    let mut w = Writer::new();
    let mut d = Describer::new();
    domain6().save_state(&mut w, &mut d).unwrap();
    let Json::Object(members) = d.finish() else {
        panic!("not an object")
    };
    let (_, Json::Array(fields)) = members.iter().find(|(k, _)| k == "fields").unwrap() else {
        panic!("no fields")
    };
    let pair = r#""vmsd_name": "interval", "version": 1, "fields": [{"name": "low", "type": "uint64", "size": 8}, {"name": "high", "type": "uint64", "size": 8}], "vmsd_name": "mapping", "version": 1, "fields": [{"name": "phys_addr", "type": "uint64", "size": 8}, {"name": "flags", "type": "uint32", "size": 4}]"#;
    assert_eq!(
        Style::QEMU.to_string_json(&fields[1]),
        format!(r#"{{"name": "mappings", "type": "gtree", {pair}, {pair}, "size": 63}}"#)
    );
}

#[test]
fn a_count_that_disagrees_with_the_nodes_is_an_error() {
    for (count, what) in [
        (3u8, "3 nodes announced, 2 sent"),
        (1, "more nodes than the 1"),
    ] {
        let mut bytes = domain6_bytes();
        bytes[7] = count;
        let err = Domain::default().load_bytes(&bytes, 1).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
        assert_eq!(err.path(), "domain.mappings");
    }
}

#[test]
fn a_key_sent_twice_is_an_error_where_qemu_replaces_the_value() {
    let mut bytes = vec![0, 0, 0, 6, 0, 0, 0, 2];
    bytes.extend(node(0x1000, 0x1fff, 0xa000, 1));
    bytes.extend(node(0x1000, 0x1fff, 0xb000, 2));
    bytes.push(0);
    let err = Domain::default().load_bytes(&bytes, 1).unwrap_err();
    assert!(err.to_string().contains("a key sent twice"), "{err}");
    assert_eq!(err.path(), "domain.mappings[1]");
}

#[test]
fn a_negative_count_is_refused_before_reading_nodes() {
    let mut bytes = domain6_bytes();
    bytes[4] = 0x80;
    let err = Domain::default().load_bytes(&bytes, 1).unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
}
