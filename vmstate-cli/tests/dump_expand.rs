//! `vmstate dump --expand`: queues, trees, temporaries and pointer arrays decoded into
//! their elements, on QEMU's own streams (a QTAILQ in uefi-vars, a WITH_TMP in
//! virtio-mem) and on a stream of our engine with the kinds no QEMU 10 x86 stream
//! describes (gtrees, arrays with NULL elements).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use common::ok;
use serde_json::Value;
use vmstate::stream::{StreamConfig, save_snapshot};
use vmstate::{Registration, Registry, Tmp, VmState};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../compat-tests/fixtures/qemu-10.0.2")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn dump(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// The one section whose key starts with `idstr (`.
fn section<'a>(dump: &'a Value, idstr: &str) -> &'a Value {
    let prefix = format!("{idstr} (");
    let mut found = dump
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix));
    let (_, v) = found.next().expect("the section is dumped");
    v
}

#[test]
fn qemus_qtailq_is_a_list_of_elements() {
    let path = fixture("q35-uefi-vars.mig");
    let plain = dump(&["dump", &path]);
    let vars = &section(&plain, "uefi-vars-sysbus")["state"]["variables"];
    assert!(
        vars.as_str().is_some_and(|s| s.starts_with("01 61 df e4")),
        "{vars}"
    );

    let expanded = dump(&["dump", "--expand", &path]);
    let state = &section(&expanded, "uefi-vars-sysbus")["state"];
    let vars = state["variables"].as_array().expect("a list of variables");
    assert_eq!(vars.len(), 6);
    let name_sizes: Vec<&str> = vars
        .iter()
        .map(|v| v["name_size"].as_str().unwrap())
        .collect();
    assert_eq!(
        name_sizes,
        [
            "0x00000014",
            "0x00000022",
            "0x00000016",
            "0x00000016",
            "0x0000001a",
            "0x00000016"
        ]
    );
    assert_eq!(vars[0]["data"], "01");
    assert_eq!(state["var_policies"], serde_json::json!([]));
}

#[test]
fn qemus_tmp_is_an_object() {
    let path = fixture("q35-virtio-mem.mig");
    let expanded = dump(&["dump", "--expand", &path]);
    let early = section(&expanded, "0000:00:01.0/virtio-mem-device-early");
    assert_eq!(early["tmp"]["block_size"], "0x0000000000200000");
    assert_eq!(early["tmp"]["addr"], "0x0000000100000000");
    assert_eq!(early["size"], "0x0000000000000000");
}

#[derive(VmState, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
#[vmstate(name = "interval", version = 1)]
struct Interval {
    low: u64,
    high: u64,
}

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "mapping", version = 1)]
struct Mapping {
    phys_addr: u64,
}

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "domain", version = 1)]
struct Domain {
    id: u32,
    #[vmstate(gtree)]
    mappings: BTreeMap<Interval, Mapping>,
}

#[derive(VmState, Default)]
#[vmstate(name = "irq", version = 0)]
struct IrqTmp {
    level: u8,
}

#[derive(VmState, Default)]
#[vmstate(name = "iommu-ish", version = 1)]
struct Iommu {
    #[vmstate(gtree)]
    domains: BTreeMap<u64, Domain>,
    #[vmstate(qlist)]
    pending: VecDeque<Mapping>,
    #[vmstate(array_of_pointer)]
    slots: [Option<u16>; 3],
    #[vmstate(to_tmp = Self::irq, from_tmp = Self::set_irq)]
    tmp: Tmp<IrqTmp>,
    #[vmstate(skip)]
    level: u8,
}

impl Iommu {
    fn irq(&self) -> IrqTmp {
        IrqTmp { level: self.level }
    }
    fn set_irq(&mut self, t: IrqTmp) -> Result<(), String> {
        self.level = t.level;
        Ok(())
    }
}

#[test]
fn our_gtrees_pointer_arrays_and_temporaries_expand_and_rewrite_identically() {
    let mut reg = Registry::new();
    let domain = Domain {
        id: 5,
        mappings: BTreeMap::from([(
            Interval {
                low: 0x1000,
                high: 0x1fff,
            },
            Mapping { phys_addr: 0xa000 },
        )]),
    };
    let dev = Iommu {
        domains: BTreeMap::from([(5, domain)]),
        pending: VecDeque::from([Mapping { phys_addr: 1 }]),
        slots: [Some(7), None, Some(9)],
        level: 1,
        ..Default::default()
    };
    reg.register_device(dev, Registration::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iommu.mig");
    let mut bytes = Vec::new();
    save_snapshot(&mut reg, &mut bytes, StreamConfig::new("demo-1.0")).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let path = path.to_str().unwrap();

    let expanded = dump(&["dump", "--expand", path]);
    let dev = section(&expanded, "iommu-ish");
    let domains = dev["domains"].as_array().expect("a list of nodes");
    assert_eq!(domains.len(), 1);
    assert_eq!(domains[0]["key"], "0x0000000000000005");
    let domain = &domains[0]["value"];
    assert_eq!(domain["id"], "0x00000005");
    let mapping = &domain["mappings"][0];
    assert_eq!(mapping["key"]["low"], "0x0000000000001000");
    assert_eq!(mapping["value"]["phys_addr"], "0x000000000000a000");
    assert_eq!(dev["pending"][0]["phys_addr"], "0x0000000000000001");
    assert_eq!(
        dev["slots"],
        serde_json::json!(["0x0007", "nullptr", "0x0009"])
    );
    assert_eq!(dev["tmp"]["level"], "0x01");

    // Without --expand they are the script's hex strings.
    let plain = dump(&["dump", path]);
    assert!(section(&plain, "iommu-ish")["domains"].is_string());

    let rewritten = dir.path().join("again.mig");
    ok(&["rewrite", path, rewritten.to_str().unwrap()]);
    assert_eq!(std::fs::read(rewritten).unwrap(), bytes);
    assert!(ok(&["verify", path]).contains(": OK: "));
}
