//! The checker's rules one by one, on small dumps written as JSON and read into the
//! typed schema.

use serde_json::{Map, Value, json};
use vmstate::schema::{Dump, MACHINE_KEY};

use super::*;

/// A primitive field.
fn f(name: &str, size: i64) -> Value {
    json!({"field": name, "version_id": 0, "field_exists": false, "size": size})
}

/// A field with a version.
fn fv(name: &str, size: i64, version: i64) -> Value {
    json!({"field": name, "version_id": version, "field_exists": false, "size": size})
}

/// A struct field.
fn st(name: &str, desc: Value) -> Value {
    json!({"field": name, "version_id": 0, "field_exists": false, "size": 0,
           "Description": desc})
}

fn desc(name: &str, version: i64, min: i64, fields: Vec<Value>) -> Value {
    json!({"name": name, "version_id": version, "minimum_version_id": min,
           "Fields": fields})
}

fn with_subs(mut d: Value, subs: Vec<Value>) -> Value {
    d["Subsections"] = Value::Array(subs);
    d
}

fn section(name: &str, d: Value) -> Value {
    json!({"Name": name, "version_id": d["version_id"],
           "minimum_version_id": d["minimum_version_id"], "Description": d})
}

fn dump(sections: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    m.insert(MACHINE_KEY.into(), json!({"Name": "pc"}));
    for (name, d) in sections {
        m.insert(name.into(), section(name, d));
    }
    Value::Object(m)
}

/// One section `dev` with one description `dev` holding `fields`.
fn dev(version: i64, min: i64, fields: Vec<Value>) -> Value {
    dump(vec![("dev", desc("dev", version, min, fields))])
}

/// A dump written as JSON, read into the typed schema.
fn typed(v: &Value) -> Dump {
    Dump::from_json(v.clone()).unwrap()
}

/// [`super::check`] on dumps written as JSON.
fn check(src: &Value, dest: &Value, opts: &CheckOptions) -> Vec<Problem> {
    super::check(&typed(src), &typed(dest), opts)
}

/// [`super::machine_warning`] on dumps written as JSON.
fn machine_warning(src: &Value, dest: &Value) -> Option<String> {
    super::machine_warning(&typed(src), &typed(dest))
}

fn lines(src: &Value, dest: &Value, opts: &CheckOptions) -> Vec<String> {
    check(src, dest, opts)
        .iter()
        .map(Problem::to_string)
        .collect()
}

fn strict(src: &Value, dest: &Value) -> Vec<String> {
    lines(src, dest, &CheckOptions::default())
}

#[test]
fn identical_dumps_are_compatible() {
    let a = dev(3, 1, vec![f("a", 4), fv("b", 8, 2)]);
    assert!(check(&a, &a, &CheckOptions::default()).is_empty());
}

#[test]
fn version_error_at_section_and_description_level() {
    let src = dev(2, 1, vec![f("a", 4)]);
    let dest = dev(1, 1, vec![f("a", 4)]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(
        p.iter().map(Problem::to_string).collect::<Vec<_>>(),
        [
            r#"Section "dev" version error: 2 > 1"#,
            r#"Section "dev" Description "dev": version error: 2 > 1"#,
        ]
    );
    assert_eq!(p[0].description, Vec::<String>::new());
    assert_eq!(p[1].description, ["dev"]);
    assert_eq!(p[1].kind, ProblemKind::VersionError { src: 2, dest: 1 });
    // Older src, newer dest: fine.
    assert!(check(&dest, &src, &CheckOptions::default()).is_empty());
}

#[test]
fn field_version_error_names_the_field() {
    let src = dev(2, 1, vec![fv("a", 4, 2)]);
    let dest = dev(2, 1, vec![fv("a", 4, 1)]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].field.as_deref(), Some("a"));
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev" Description "dev", Field "a": version error: 2 > 1"#
    );
}

#[test]
fn missing_section_and_tolerated_section_renames() {
    let src = dump(vec![
        ("gone", desc("gone", 1, 1, vec![])),
        ("ICH9 LPC", desc("ICH9LPC", 1, 1, vec![f("a", 1)])),
        ("e1000", desc("e1000", 2, 1, vec![f("a", 1)])),
    ]);
    let dest = dump(vec![
        ("ICH9-LPC", desc("ICH9LPC", 1, 1, vec![f("a", 1)])),
        ("e1000-82540em", desc("e1000", 2, 1, vec![f("a", 1)])),
    ]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].kind, ProblemKind::SectionMissing);
    assert_eq!(p[0].to_string(), r#"Section "gone" does not exist in dest"#);
    assert_eq!(renamed_section("ICH9-LPC"), Some("ICH9 LPC"));
    assert_eq!(renamed_section("e1000-82540em"), Some("e1000"));
    assert_eq!(renamed_section("hpet"), None);
}

#[test]
fn machine_mismatch_is_only_a_warning() {
    let src = dev(1, 1, vec![f("a", 1)]);
    let mut dest = src.clone();
    dest[MACHINE_KEY]["Name"] = json!("q35");
    assert!(check(&src, &dest, &CheckOptions::default()).is_empty());
    assert_eq!(
        machine_warning(&src, &dest).as_deref(),
        Some(r#"Warning: checking incompatible machine types: "pc", "q35""#)
    );
    assert_eq!(machine_warning(&src, &src), None);
    // QEMU always writes the machine entry: a dump without one is not read (QEMU's
    // checker would count a missing section).
    dest.as_object_mut().unwrap().remove(MACHINE_KEY);
    let err = Dump::from_json(dest).unwrap_err();
    assert_eq!(err.to_string(), "missing field `vmschkmachine`");
}

#[test]
fn missing_field_when_dest_runs_out() {
    let src = dev(1, 1, vec![f("a", 4), f("b", 4), f("c", 4)]);
    let dest = dev(1, 1, vec![f("a", 4)]);
    let p = check(&src, &dest, &CheckOptions::default());
    // Only the first missing field is reported.
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProblemKind::DestFieldsExhausted);
    assert_eq!(p[0].field.as_deref(), Some("b"));
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev", Description "dev": expected field "b", while dest has no further fields"#
    );
}

#[test]
fn field_name_mismatch_skips_the_rest() {
    let src = dev(1, 1, vec![f("a", 4), f("b", 4), f("c", 2)]);
    let dest = dev(1, 1, vec![f("a", 4), f("x", 4), f("c", 4)]);
    assert_eq!(
        strict(&src, &dest),
        [r#"Section "dev", Description "dev": expected field "b", got "x"; skipping rest"#]
    );
}

#[test]
fn size_mismatch() {
    let src = dev(1, 1, vec![f("a", 8), f("b", 4)]);
    let dest = dev(1, 1, vec![f("a", 4), f("b", 4)]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProblemKind::SizeMismatch { src: 8, dest: 4 });
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev" Description "dev" Field "a" size mismatch: 8 , 4"#
    );
}

#[test]
fn struct_sizes_are_not_compared() {
    let inner = |size| desc("inner", 1, 1, vec![f("x", size)]);
    let mut s = st("s", inner(4));
    s["size"] = json!(80);
    let mut d = st("s", inner(4));
    d["size"] = json!(42);
    assert!(strict(&dev(1, 1, vec![s.clone()]), &dev(1, 1, vec![d])).is_empty());
    // ...but their descriptions are, with the nested path.
    let d = st("s", inner(2));
    let p = check(
        &dev(1, 1, vec![s]),
        &dev(1, 1, vec![d]),
        &CheckOptions::default(),
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].description, ["dev", "inner"]);
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev" Description "inner" Field "x" size mismatch: 4 , 2"#
    );
}

#[test]
fn unused_balances_against_whole_fields() {
    // src: 8 unused bytes; dest: two u32 fields in their place, then the same tail.
    let mut unused8 = f("unused", 8);
    unused8["version_id"] = json!(0);
    let src = dev(1, 1, vec![f("a", 1), unused8.clone(), f("z", 2)]);
    let dest = dev(1, 1, vec![f("a", 1), f("b", 4), f("c", 4), f("z", 2)]);
    assert!(strict(&src, &dest).is_empty());
    // And the other way round (dest turned fields into unused bytes).
    assert!(strict(&dest, &src).is_empty());
    // Equal totals: an array against unused bytes.
    let arr = json!({"field": "regs", "version_id": 0, "field_exists": false,
                     "num": 4, "size": 2});
    let dest = dev(1, 1, vec![f("a", 1), arr, f("z", 2)]);
    assert!(strict(&src, &dest).is_empty());
}

#[test]
fn unused_overshoot_is_a_mismatch() {
    let src = dev(1, 1, vec![f("unused", 6), f("z", 2)]);
    let dest = dev(1, 1, vec![f("b", 4), f("c", 4), f("z", 2)]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProblemKind::UnusedSizeMismatch);
    assert_eq!(p[0].field.as_deref(), Some("c"));
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev", Description "dev": unused size mismatch near "c""#
    );
    // Same in the other direction, now consuming src fields.
    let p = check(&dest, &src, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProblemKind::UnusedSizeMismatch);
    assert_eq!(p[0].field.as_deref(), Some("c"));
}

#[test]
fn descends_into_substructs_both_ways() {
    let flat = dev(1, 1, vec![f("a", 4), f("b", 4), f("c", 4)]);
    let nested = dev(
        1,
        1,
        vec![
            st("s", desc("sub", 1, 1, vec![f("a", 4), f("b", 4)])),
            f("c", 4),
        ],
    );
    assert!(strict(&flat, &nested).is_empty());
    assert!(strict(&nested, &flat).is_empty());
    // A size difference inside the substruct is still found.
    let nested2 = dev(
        1,
        1,
        vec![
            st("s", desc("sub", 1, 1, vec![f("a", 4), f("b", 2)])),
            f("c", 4),
        ],
    );
    assert_eq!(
        strict(&flat, &nested2),
        [r#"Section "dev" Description "dev" Field "b" size mismatch: 4 , 2"#]
    );
}

#[test]
fn missing_description_of_a_struct_field() {
    let src = dev(1, 1, vec![st("s", desc("sub", 1, 1, vec![f("a", 4)]))]);
    let dest = dev(1, 1, vec![f("s", 0)]);
    assert_eq!(
        strict(&src, &dest),
        [r#"Section "dev", Description "dev", Field "s": missing description"#]
    );
}

#[test]
fn description_name_mismatch_and_missing_entries() {
    let src = dump(vec![(
        "dev",
        with_subs(
            desc("dev", 1, 1, vec![f("a", 1)]),
            vec![desc("dev/x", 1, 1, vec![])],
        ),
    )]);
    let dest = dump(vec![("dev", desc("other", 1, 1, vec![f("a", 1)]))]);
    assert_eq!(
        strict(&src, &dest),
        [r#"Section "dev": Description "dev" missing, got "other" instead; skipping"#]
    );
    let dest = dump(vec![("dev", desc("dev", 1, 1, vec![f("a", 1)]))]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].kind,
        ProblemKind::EntryMissing {
            entry: "Subsections".into()
        }
    );
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev" Description "dev": Entry "Subsections" missing"#
    );
    // A section-level entry is always there in QEMU's dumps: a dump without one is not
    // read (QEMU's checker would report `Section "dev": Entry "Description" missing`).
    let mut dest2 = src.clone();
    dest2["dev"].as_object_mut().unwrap().remove("Description");
    let err = Dump::from_json(dest2).unwrap_err();
    assert_eq!(err.to_string(), "missing field `Description`");
}

#[test]
fn subsection_missing_and_checked_when_present() {
    let sub = |size| desc("dev/sub", 1, 1, vec![f("x", size)]);
    let src = dump(vec![(
        "dev",
        with_subs(desc("dev", 1, 1, vec![f("a", 1)]), vec![sub(4)]),
    )]);
    let dest = dump(vec![(
        "dev",
        with_subs(
            desc("dev", 1, 1, vec![f("a", 1)]),
            vec![desc("dev/other", 1, 1, vec![])],
        ),
    )]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].kind,
        ProblemKind::SubsectionMissing {
            name: "dev/sub".into()
        }
    );
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev", Description "dev": Subsection "dev/sub" not found"#
    );
    // Extra dest subsections are fine; a present one is checked.
    let dest = dump(vec![(
        "dev",
        with_subs(
            desc("dev", 1, 1, vec![f("a", 1)]),
            vec![desc("dev/other", 1, 1, vec![]), sub(2)],
        ),
    )]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].description, ["dev", "dev/sub"]);
    assert_eq!(p[0].kind, ProblemKind::SizeMismatch { src: 4, dest: 2 });
}

#[test]
fn rename_whitelist_is_per_description() {
    let src = dump(vec![(
        "e1000",
        desc("e1000", 2, 1, vec![f("dev", 4), f("mac", 6)]),
    )]);
    let dest = dump(vec![(
        "e1000",
        desc("e1000", 2, 1, vec![f("parent_obj", 4), f("mac", 6)]),
    )]);
    assert!(strict(&src, &dest).is_empty());
    assert!(strict(&dest, &src).is_empty());
    // The same rename in another description is a mismatch.
    let src = dev(1, 1, vec![f("dev", 4)]);
    let dest = dev(1, 1, vec![f("parent_obj", 4)]);
    assert_eq!(strict(&src, &dest).len(), 1);
    // hpet's rename is only in the upstream list.
    let src = dump(vec![(
        "hpet",
        desc("hpet", 2, 1, vec![fv("num_timers", 1, 2)]),
    )]);
    let dest = dump(vec![(
        "hpet",
        desc("hpet", 2, 1, vec![fv("num_timers_save", 1, 2)]),
    )]);
    assert_eq!(strict(&src, &dest).len(), 1);
    let upstream = CheckOptions {
        renames: Renames::Upstream,
        ..CheckOptions::default()
    };
    assert!(lines(&src, &dest, &upstream).is_empty());
    assert!(Renames::Qemu10_0.fields_match("piix4_pm", "gpe", "ar.gpe"));
    // Any two names of one list match, as in QEMU (not only the intended pairs).
    assert!(Renames::Qemu10_0.fields_match("piix4_pm", "gpe", "ar.tmr.timer"));
    assert!(!Renames::Qemu10_0.fields_match("piix4_pm", "gpe", "nope"));
}

#[test]
fn minimum_version_at_section_level_is_an_extra_rule() {
    // dest dropped support for version 1 streams.
    let src = dev(1, 1, vec![f("a", 1)]);
    let mut dest = dev(2, 2, vec![f("a", 1)]);
    // Keep the descriptions compatible so that only the section level differs.
    dest["dev"]["Description"]["minimum_version_id"] = json!(1);
    assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert!(p[0].is_extra());
    assert_eq!(
        p[0].kind,
        ProblemKind::MinimumVersionError {
            src: 1,
            dest_min: 2
        }
    );
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev" minimum version error: 1 < 2"#
    );
    // At description level QEMU reports it too.
    let dest = dev(2, 2, vec![f("a", 1)]);
    let q = lines(&src, &dest, &CheckOptions::qemu());
    assert_eq!(
        q,
        [r#"Section "dev" Description "dev": minimum version error: 1 < 2"#]
    );
    assert_eq!(check(&src, &dest, &CheckOptions::default()).len(), 2);
}

#[test]
fn extra_trailing_dest_fields() {
    let src = dev(2, 1, vec![f("a", 4)]);
    let dest = dev(
        3,
        1,
        vec![
            f("a", 4),
            f("b", 4),     // read: reported
            fv("c", 4, 2), // since 2 <= 2: reported
            fv("d", 4, 3), // since 3 > 2: skipped on load
            json!({"field": "e", "version_id": 0, "field_exists": true, "size": 4}),
        ],
    );
    assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(
        p.iter()
            .map(|p| p.field.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["b", "c"]
    );
    assert!(p.iter().all(Problem::is_extra));
    assert_eq!(p[1].kind, ProblemKind::ExtraDestField { version_id: 2 });
    assert_eq!(
        p[0].to_string(),
        r#"Section "dev", Description "dev": dest has extra field "b" (version_id 0) that src does not send"#
    );
}

#[test]
fn dest_fields_where_src_has_no_field_list() {
    let mut src = dev(1, 1, vec![]);
    src["dev"]["Description"]
        .as_object_mut()
        .unwrap()
        .remove("Fields");
    let dest = dev(1, 1, vec![f("virtio", 0)]);
    assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
    assert_eq!(
        strict(&src, &dest),
        [
            r#"Section "dev", Description "dev": dest has extra field "virtio" (version_id 0) that src does not send"#
        ]
    );
    // The other way round it is QEMU's `Entry "Fields" missing`.
    assert_eq!(
        strict(&dest, &src),
        [r#"Section "dev" Description "dev": Entry "Fields" missing"#]
    );
}

#[test]
fn extra_trailing_fields_in_nested_structs_use_the_dest_version() {
    // A nested struct is loaded at dest's own version, so a field added behind a
    // version bump of the struct is still read.
    let src = dev(1, 1, vec![st("s", desc("sub", 1, 1, vec![f("x", 4)]))]);
    let dest = dev(
        1,
        1,
        vec![st("s", desc("sub", 2, 1, vec![f("x", 4), fv("y", 4, 2)]))],
    );
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].description, ["dev", "sub"]);
    assert_eq!(p[0].field.as_deref(), Some("y"));
    // While in a subsection, the src version from the header decides.
    let src = dump(vec![(
        "dev",
        with_subs(
            desc("dev", 1, 1, vec![]),
            vec![desc("dev/s", 1, 1, vec![f("x", 4)])],
        ),
    )]);
    let dest = dump(vec![(
        "dev",
        with_subs(
            desc("dev", 1, 1, vec![]),
            vec![desc("dev/s", 2, 1, vec![f("x", 4), fv("y", 4, 2)])],
        ),
    )]);
    assert!(strict(&src, &dest).is_empty());
}

#[test]
fn extra_trailing_fields_after_a_dest_substruct() {
    let flat = dev(1, 1, vec![f("a", 4)]);
    let nested = dev(
        1,
        1,
        vec![
            st("s", desc("sub", 1, 1, vec![f("a", 4), f("b", 4)])),
            f("c", 4),
        ],
    );
    let p = check(&flat, &nested, &CheckOptions::default());
    assert_eq!(
        p.iter()
            .map(|p| p.field.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["b", "c"]
    );
}

#[test]
fn unused_partly_covered_at_the_end() {
    let src = dev(1, 1, vec![f("a", 1), f("b", 4)]);
    let dest = dev(1, 1, vec![f("a", 1), f("unused", 8)]);
    assert!(lines(&src, &dest, &CheckOptions::qemu()).is_empty());
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProblemKind::UnusedUncovered { bytes: 4 });
    assert_eq!(p[0].field.as_deref(), Some("unused"));
}

#[test]
fn exit_code_is_capped() {
    let p = Problem {
        section: "s".into(),
        description: vec![],
        field: None,
        kind: ProblemKind::SectionMissing,
        message: "does not exist in dest".into(),
    };
    assert_eq!(exit_code(&[]), 0);
    assert_eq!(exit_code(&vec![p.clone(); 3]), 3);
    assert_eq!(exit_code(&vec![p; 300]), 255);
}

#[test]
fn json_output() {
    let src = dev(1, 1, vec![f("a", 8)]);
    let dest = dev(1, 1, vec![f("a", 4)]);
    let p = check(&src, &dest, &CheckOptions::default());
    assert_eq!(
        problems_to_json(&p),
        json!([{
            "section": "dev",
            "description": ["dev"],
            "field": "a",
            "kind": "size-mismatch",
            "src": 8,
            "dest": 4,
            "message": "size mismatch: 8 , 4",
            "text": "Section \"dev\" Description \"dev\" Field \"a\" size mismatch: 8 , 4",
            "extra": false
        }])
    );
}

#[test]
fn malformed_dumps_are_errors_before_any_check() {
    // What the untyped checker used to read as zeros: now errors naming the key.
    for (junk, error) in [
        (json!(null), "invalid type: null, expected a schema dump"),
        (json!([]), "invalid type: sequence, expected a schema dump"),
        (
            json!({"x": 1}),
            "invalid type: integer `1`, expected struct Section",
        ),
        (
            json!({"vmschkmachine": {"Name": "pc"}, "x": {"Name": "x", "version_id": 1,
                "minimum_version_id": 1, "Description": {"name": "x", "version_id": 1,
                "minimum_version_id": 1, "Fields": [{"field": "a", "version_id": 0,
                "field_exists": false}]}}}),
            "missing field `size`",
        ),
        (
            json!({"vmschkmachine": {"Name": "pc"}, "x": {"Name": "x", "version_id": 1,
                "minimum_version_id": 1, "Description": {"name": "x", "version_id": 1,
                "minimum_version_id": 1, "Fields": {}}}}),
            "invalid type: map, expected a sequence",
        ),
    ] {
        let err = Dump::from_json(junk).unwrap_err().to_string();
        assert!(err.starts_with(error), "{err}");
    }
}
