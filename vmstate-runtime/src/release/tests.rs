use serde_json::Value;

use super::*;
use crate::stream::SavePolicy;
use crate::{ErrorKind, Registration, VmState};

/// Release 1: "dev" v1 with a nested "inner" v1; no subsection.
mod r1 {
    use crate::VmState;

    #[derive(VmState, Default, Debug, PartialEq)]
    #[vmstate(name = "inner", version = 1)]
    pub struct Inner {
        pub a: u16,
    }

    #[derive(VmState, Default, Debug, PartialEq)]
    #[vmstate(name = "dev", version = 1)]
    pub struct Dev {
        pub x: u8,
        pub inner: Inner,
    }
}

/// Release 2: "dev" v3 min 1 with `y` since 2, `z` since 3, "inner" v2 with `b`
/// since 2, and a subsection "dev/extra".
mod r2 {
    use crate::VmState;

    #[derive(VmState, Default, Debug, PartialEq)]
    #[vmstate(name = "inner", version = 2, min_version = 1)]
    pub struct Inner {
        pub a: u16,
        #[vmstate(since = 2)]
        pub b: u8,
    }

    #[derive(VmState, Default, Debug, PartialEq)]
    #[vmstate(name = "dev/extra", version = 1)]
    pub struct Extra {
        pub e: u32,
    }

    #[derive(VmState, Default, Debug, PartialEq)]
    #[vmstate(name = "dev", version = 3, min_version = 1)]
    pub struct Dev {
        pub x: u8,
        pub inner: Inner,
        #[vmstate(since = 2)]
        pub y: u8,
        #[vmstate(since = 3)]
        pub z: u32,
        #[vmstate(subsection, needed = Self::has_extra)]
        pub extra: Extra,
    }

    impl Dev {
        fn has_extra(&self) -> bool {
            self.extra.e != 0
        }
    }
}

fn v(major: u64, minor: u64) -> Version {
    Version::new(major, minor, 0)
}

fn rel1() -> Release {
    Release::new(v(1, 0), "demo-1.0", [("dev", r1::Dev::DESCRIPTION)])
}

/// Release 1.5 knows "dev" at version 2 (with `y`), "inner" v2, and "dev/extra".
fn rel1_5() -> Release {
    #[derive(VmState, Default)]
    #[vmstate(name = "dev", version = 2, min_version = 1)]
    struct Dev {
        x: u8,
        inner: r2::Inner,
        #[vmstate(since = 2)]
        y: u8,
        #[vmstate(subsection, needed = Self::never)]
        extra: r2::Extra,
    }
    impl Dev {
        fn never(&self) -> bool {
            false
        }
    }
    Release::new(v(1, 5), "demo-1.5", [("dev", Dev::DESCRIPTION)])
}

fn rel2() -> Release {
    Release::new(v(2, 0), "demo-2.0", [("dev", r2::Dev::DESCRIPTION)])
}

fn registry<D: crate::Device + 'static>(dev: D) -> Registry {
    let mut reg = Registry::new();
    reg.register_device(dev, Registration::new()).unwrap();
    reg
}

fn dev2(extra: u32) -> r2::Dev {
    r2::Dev {
        x: 7,
        inner: r2::Inner { a: 0x1234, b: 9 },
        y: 5,
        z: 0xdead_beef,
        extra: r2::Extra { e: extra },
    }
}

fn save_for(dev: r2::Dev, target: &Release) -> Result<Vec<u8>> {
    let mut reg = registry(dev);
    let mut out = Vec::new();
    save_for_release(&mut reg, &mut out, rel2().stream_config(), target)?;
    Ok(out)
}

/// The FULL section of "dev": (header version, payload up to the footer).
fn dev_section(stream: &[u8], machine: &str) -> (u32, Vec<u8>) {
    let config_end = 8 + 1 + 4 + machine.len();
    assert_eq!(&stream[9..13], (machine.len() as u32).to_be_bytes());
    assert_eq!(&stream[13..config_end], machine.as_bytes());
    let s = &stream[config_end..];
    // No iterative handler: the SWITCHOVER_START command, then the FULL section.
    assert_eq!(&s[..5], [0x08, 0x00, 0x0b, 0x00, 0x00]);
    let s = &s[5..];
    assert_eq!(s[0], 0x04);
    assert_eq!(&s[5..9], b"\x03dev");
    let version = u32::from_be_bytes(s[13..17].try_into().unwrap());
    let footer = s.iter().position(|&b| b == 0x7e).unwrap();
    (version, s[17..footer].to_vec())
}

fn vmdesc(stream: &[u8]) -> Value {
    // Without the integrity record, the trailer is 0x06, be32 length, then the JSON up
    // to the end.
    let record = crate::stream::integrity::IntegrityRecord::from_tail(stream);
    assert!(
        record.is_some(),
        "a snapshot ends with its integrity record"
    );
    let stream = &stream[..stream.len() - crate::stream::integrity::RECORD_LEN as usize];
    let at = (0..stream.len() - 5)
        .find(|&at| {
            stream[at] == 0x06
                && u32::from_be_bytes(stream[at + 1..at + 5].try_into().unwrap()) as usize
                    == stream.len() - at - 5
        })
        .unwrap();
    serde_json::from_slice(&stream[at + 5..]).unwrap()
}

#[test]
fn header_subsection_and_vmdesc_versions_follow_the_policy() {
    let target = rel1_5();
    let bytes = save_for(dev2(0x0102_0304), &target).unwrap();
    let (version, payload) = dev_section(&bytes, "demo-1.5");
    assert_eq!(version, 2, "section header at the target's version");
    // x, inner.a, inner.b (inner at 1.5's version 2), y; no z (since 3); subsection.
    let mut expected = vec![7, 0x12, 0x34, 9, 5, 0x05, 9];
    expected.extend(b"dev/extra");
    expected.extend([0, 0, 0, 1, 1, 2, 3, 4]);
    assert_eq!(payload, expected);
    let desc = vmdesc(&bytes);
    let dev = &desc["devices"][0];
    assert_eq!(dev["version"], 2);
    assert_eq!(dev["fields"][1]["struct"]["version"], 2);
    assert_eq!(dev["subsections"][0]["version"], 1);
    let names: Vec<&str> = dev["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["x", "inner", "y"]);

    // For release 1: version 1, inner at its version 1 (no `b`), no `y`.
    let bytes = save_for(dev2(0), &rel1()).unwrap();
    let (version, payload) = dev_section(&bytes, "demo-1.0");
    assert_eq!(version, 1);
    assert_eq!(payload, [7, 0x12, 0x34]);
    let desc = vmdesc(&bytes);
    assert_eq!(desc["devices"][0]["version"], 1);
    assert_eq!(desc["devices"][0]["fields"][1]["struct"]["version"], 1);

    // And release 1 loads it.
    let map = ReleaseMap::new([rel1()]).unwrap();
    let mut dst = registry(r1::Dev::default());
    let loaded = load_for_release(
        &map,
        &mut dst,
        &mut Reader::from_slice(&bytes),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(loaded.written_by.version(), &v(1, 0));
    let h = dst.find_section("dev", 0).unwrap();
    let got = dst.device_mut::<r1::Dev>(h).unwrap();
    assert_eq!(
        *got,
        r1::Dev {
            x: 7,
            inner: r1::Inner { a: 0x1234 }
        }
    );
}

#[test]
fn saving_for_the_current_release_is_a_plain_save() {
    let mut plain = Vec::new();
    let mut reg = registry(dev2(1));
    crate::stream::save_snapshot(&mut reg, &mut plain, rel2().stream_config()).unwrap();
    assert_eq!(save_for(dev2(1), &rel2()).unwrap(), plain);
}

#[test]
fn a_needed_subsection_the_target_does_not_know_fails_the_save() {
    // Not needed: fine.
    assert!(save_for(dev2(0), &rel1()).is_ok());
    let err = save_for(dev2(5), &rel1()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(
            "cannot save for release 1.0.0 (machine demo-1.0): this state needs subsection \
             'dev/extra' of 'dev' (its `needed` is true), and the release does not know \
             subsection 'dev/extra' of 'dev'"
        ),
        "{msg}"
    );
    assert_eq!(err.section().unwrap().idstr, "dev");
    assert!(matches!(err.kind(), ErrorKind::Invalid { what, .. } if *what == SAVE_ERROR));
}

#[test]
fn a_device_the_target_does_not_know_fails_before_writing() {
    #[derive(VmState, Default)]
    #[vmstate(name = "newdev")]
    struct NewDev {
        q: u8,
    }
    let mut reg = registry(dev2(0));
    reg.register_device(NewDev { q: 1 }, Registration::new())
        .unwrap();
    let mut out = Vec::new();
    let err = save_for_release(&mut reg, &mut out, rel2().stream_config(), &rel1()).unwrap_err();
    assert!(out.is_empty(), "nothing written");
    assert_eq!(err.section().unwrap().idstr, "newdev");
    assert!(
        err.to_string()
            .contains("cannot save for release 1.0.0 (machine demo-1.0): the release does not know the device 'newdev'"),
        "{err}"
    );
}

#[test]
fn a_device_that_is_not_needed_need_not_be_known() {
    #[derive(VmState, Default)]
    #[vmstate(name = "optdev", needed = Self::on)]
    struct OptDev {
        q: u8,
    }
    impl OptDev {
        fn on(&self) -> bool {
            self.q != 0
        }
    }
    let mut reg = registry(dev2(0));
    reg.register_device(OptDev { q: 0 }, Registration::new())
        .unwrap();
    let mut out = Vec::new();
    save_for_release(&mut reg, &mut out, rel2().stream_config(), &rel1()).unwrap();
}

#[test]
fn a_raised_min_version_refuses_older_targets_even_with_the_same_layout() {
    #[derive(VmState, Default)]
    #[vmstate(name = "dev", version = 2, min_version = 2)]
    struct Dev {
        x: u8,
        inner: r1::Inner,
    }
    let target = rel1();
    let err = ForRelease::for_descriptions(&target, [Dev::DESCRIPTION]).unwrap_err();
    assert!(
        err.to_string().contains(
            "the release reads 'dev' at version 1, and this build writes versions 2 to 2 only \
             (min_version was raised past 1)"
        ),
        "{err}"
    );
}

#[test]
fn a_layout_change_without_a_version_is_refused_with_the_checker_s_words() {
    // `x` widened to u16 at version 1: release 1 would read one byte.
    #[derive(VmState, Default)]
    #[vmstate(name = "dev", version = 1)]
    struct Wide {
        x: u16,
        inner: r1::Inner,
    }
    let target = rel1();
    let err = ForRelease::for_descriptions(&target, [Wide::DESCRIPTION]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("the release's 'dev' (version 1) differs"),
        "{msg}"
    );
    assert!(msg.contains("size mismatch: 2 , 1"), "{msg}");

    // A field inserted without `since`.
    #[derive(VmState, Default)]
    #[vmstate(name = "dev", version = 1)]
    struct Inserted {
        x: u8,
        w: u8,
        inner: r1::Inner,
    }
    let err = ForRelease::for_descriptions(&target, [Inserted::DESCRIPTION]).unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"expected field "w", got "inner""#),
        "{err}"
    );
}

#[test]
fn a_newer_nested_struct_refuses_its_parent() {
    // Release 1.5's "inner" is version 2 (with `b`); this build's is version 1.
    #[derive(VmState, Default)]
    #[vmstate(name = "dev", version = 2, min_version = 1)]
    struct Dev {
        x: u8,
        inner: r1::Inner,
        #[vmstate(since = 2)]
        y: u8,
    }
    let target = rel1_5();
    let err = ForRelease::for_descriptions(&target, [Dev::DESCRIPTION]).unwrap_err();
    assert!(
        err.to_string().contains(
            "field 'inner' of 'dev': the release has version 2 of 'inner', newer than this \
             build's version 1"
        ),
        "{err}"
    );
}

#[test]
fn fields_split_into_a_new_nested_struct_keep_their_place() {
    // Release 1's flat `x`, `inner` become a struct "dev-core" holding `x` then `inner`.
    #[derive(VmState, Default)]
    #[vmstate(name = "dev-core", version = 1)]
    struct Core {
        x: u8,
        inner: r1::Inner,
    }
    #[derive(VmState, Default)]
    #[vmstate(name = "dev", version = 1)]
    struct Dev {
        core: Core,
    }
    let target = rel1();
    let plan = ForRelease::for_descriptions(&target, [Dev::DESCRIPTION]).unwrap();
    assert_eq!(plan.version_of("dev"), Some(1));
    assert_eq!(plan.version_of("dev-core"), Some(1));
    assert_eq!(plan.save_version(Core::DESCRIPTION), 1);
    assert_eq!(plan.target().version(), &v(1, 0));
}

#[test]
fn subsections_the_target_knows_are_planned_at_its_version() {
    let target = rel1_5();
    let plan = ForRelease::for_descriptions(&target, [r2::Dev::DESCRIPTION]).unwrap();
    assert_eq!(plan.version_of("dev"), Some(2));
    assert_eq!(plan.version_of("inner"), Some(2));
    assert_eq!(plan.version_of("dev/extra"), Some(1));
    let target = rel1();
    let plan = ForRelease::for_descriptions(&target, [r2::Dev::DESCRIPTION]).unwrap();
    assert_eq!(plan.version_of("dev/extra"), None);
    assert_eq!(
        plan.refusal("dev/extra"),
        Some("the release does not know subsection 'dev/extra' of 'dev'")
    );
}

#[test]
fn streams_of_newer_or_unknown_releases_are_refused_by_name() {
    let map = ReleaseMap::new([rel1_5(), rel1()]).unwrap();
    assert_eq!(map.current().version(), &v(1, 5));
    assert_eq!(
        map.check_stream_machine("demo-1.0").unwrap().version(),
        &v(1, 0)
    );
    let err = map.check_stream_machine("demo-2.0").unwrap_err();
    assert!(matches!(&err, ReleaseError::NewerRelease(r) if r.stream_version == Some(v(2, 0))));
    assert_eq!(
        err.to_string(),
        "stream written by release 2.0.0 (machine demo-2.0), which is newer than this release \
         1.5.0 (machine demo-1.5); this release knows releases up to 1.5.0 (1.0.0, 1.5.0): \
         load the stream with release 2.0.0 or later, or have 2.0.0 save it for release 1.5.0"
    );
    let err = map.check_stream_machine("demo-1.2").unwrap_err();
    assert_eq!(
        err.to_string(),
        "stream written by release 1.2.0 (machine demo-1.2), which this release 1.5.0 (machine \
         demo-1.5) does not know; it knows 1.0.0 (demo-1.0), 1.5.0 (demo-1.5)"
    );
    let err = map.check_stream_machine("pc-i440fx-10.0").unwrap_err();
    assert!(matches!(&err, ReleaseError::UnknownRelease(r) if r.stream_version.is_none()));
    assert!(err.to_string().starts_with(
        "stream written for machine pc-i440fx-10.0, which is no release this release 1.5.0"
    ));
}

#[test]
fn load_for_release_refuses_a_newer_stream_before_any_section() {
    let mut reg = registry(dev2(0));
    let mut bytes = Vec::new();
    crate::stream::save_snapshot(&mut reg, &mut bytes, rel2().stream_config()).unwrap();
    let map = ReleaseMap::new([rel1()]).unwrap();
    let mut dst = registry(r1::Dev {
        x: 99,
        ..Default::default()
    });
    let err = load_for_release(
        &map,
        &mut dst,
        &mut Reader::from_slice(&bytes),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Invalid { what, .. } if *what == LOAD_ERROR));
    assert!(
        err.to_string().contains("newer than this release 1.0.0"),
        "{err}"
    );
    assert_eq!(err.offset(), Some(13));
    let h = dst.find_section("dev", 0).unwrap();
    assert_eq!(
        dst.device_mut::<r1::Dev>(h).unwrap().x,
        99,
        "nothing loaded"
    );

    // Not a stream: the loader's own error.
    let err = load_for_release(
        &map,
        &mut dst,
        &mut Reader::from_slice(b"nope, not a stream"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::BadMagic { .. }), "{err}");
    let opts = LoadOptions {
        no_configuration: true,
        ..Default::default()
    };
    let err = load_for_release(&map, &mut dst, &mut Reader::from_slice(&bytes), &opts).unwrap_err();
    assert!(
        err.to_string().contains("no configuration section"),
        "{err}"
    );
}

#[test]
fn release_maps_are_checked() {
    assert!(matches!(
        ReleaseMap::new([]),
        Err(ReleaseError::InvalidMap { .. })
    ));
    let dup = ReleaseMap::new([rel1(), rel1()]).unwrap_err();
    assert_eq!(
        dup.to_string(),
        "invalid release map: release 1.0.0 is listed twice"
    );
    let same_machine = Release::new(v(1, 1), "demo-1.0", [("dev", r1::Dev::DESCRIPTION)]);
    let err = ReleaseMap::new([rel1(), same_machine]).unwrap_err();
    assert!(err.to_string().contains("the same machine name 'demo-1.0'"));
    let map = ReleaseMap::new([rel2(), rel1(), rel1_5()]).unwrap();
    let versions: Vec<_> = map
        .releases()
        .iter()
        .map(|r| r.version().to_string())
        .collect();
    assert_eq!(versions, ["1.0.0", "1.5.0", "2.0.0"]);
    assert_eq!(map.find("1.5").unwrap().machine(), "demo-1.5");
    assert_eq!(map.find("demo-2.0").unwrap().version(), &v(2, 0));
    assert!(map.find("3").is_none());
}

#[test]
fn releases_round_trip_through_their_schema_files() {
    let r = rel2();
    let back = Release::from_schema_str(v(2, 0), &r.schema_text()).unwrap();
    assert_eq!(back, r);
    let s = r.section("dev").unwrap();
    assert_eq!((s.vmsd, s.version, s.min_version), ("dev", 3, 1));
    assert_eq!(r.subsections("dev"), [("dev/extra", 1)]);
    assert!(r.knows_subsection("dev", "dev/extra"));
    assert!(!rel1().knows_subsection("dev", "dev/extra"));
    assert_eq!(r.description("inner").unwrap().version_id, 2);
    assert!(Release::from_schema_str(v(1, 0), "{}").is_err());
    assert!(Release::from_schema_str(v(1, 0), "[1]").is_err());
    let err = Release::from_schema(
        v(1, 0),
        serde_json::json!({"vmschkmachine": {"Name": "m"}, "dev": {"Name": "dev"}}),
    )
    .unwrap_err();
    // A malformed dump is a deserialisation error naming the missing key.
    assert_eq!(
        err.to_string(),
        "invalid schema for release 1.0.0: missing field `version_id`"
    );
    let err = Release::from_schema_str(v(1, 0), "{\"vmschkmachine\": {}}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid schema for release 1.0.0: missing field `Name` at line 1 column 20"
    );
    let err = Release::from_schema_str(v(1, 0), "{").unwrap_err();
    assert!(err.to_string().contains(": not JSON: EOF"), "{err}");
}

#[test]
fn check_registry_finds_undeclared_and_changed_devices() {
    let reg = registry(dev2(0));
    rel2().check_registry(&reg).unwrap();
    let err = rel1().check_registry(&reg).unwrap_err();
    assert!(err.to_string().contains("its description differs"), "{err}");
    let empty = Release::new(v(1, 0), "demo-1.0", []);
    let err = empty.check_registry(&reg).unwrap_err();
    assert!(
        err.to_string().contains("registered but not declared"),
        "{err}"
    );
}

#[test]
fn versions_in_machine_names() {
    assert_eq!(parse_version("2"), Some(v(2, 0)));
    assert_eq!(parse_version("2.1"), Some(v(2, 1)));
    assert_eq!(parse_version("2.1.3"), Some(Version::new(2, 1, 3)));
    assert_eq!(parse_version("2.x"), None);
    assert_eq!(parse_version(""), None);
    assert_eq!(machine_version("demo-3.0"), Some(("demo-", v(3, 0))));
    assert_eq!(
        machine_version("pc-i440fx-10.0"),
        Some(("pc-i440fx-", v(10, 0)))
    );
    assert_eq!(machine_version("none"), None);
}
