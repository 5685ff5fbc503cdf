//! The checker on real dumps: QEMU 7.2.22 and QEMU 10.0.2 (`-M pc -dump-vmstate`),
//! against what QEMU 10.0.2's `scripts/vmstate-static-checker.py` reports for them
//! (`static-checker-qemu7.2-to-qemu10.txt`, both directions, with exit codes).

use std::collections::BTreeSet;

use compat_tests::fixture::{read_qemu10, read_qemu10_json};
use vmstate::schema::Dump;
use vmstate_tools::check::{self, CheckOptions, Problem, ProblemKind, Renames};

/// What identifies a problem across QEMU's text and ours: section, description, field,
/// kind and the kind's details. Field-level version errors carry no field (QEMU's
/// message does not name it).
type Key = (String, Option<String>, Option<String>, &'static str, String);

fn key(p: &Problem) -> Key {
    let detail = match &p.kind {
        ProblemKind::VersionError { src, dest } => format!("{src}>{dest}"),
        ProblemKind::MinimumVersionError { src, dest_min } => format!("{src}<{dest_min}"),
        ProblemKind::SizeMismatch { src, dest } => format!("{src},{dest}"),
        ProblemKind::EntryMissing { entry } => entry.clone(),
        ProblemKind::DescriptionMismatch { dest, .. } | ProblemKind::FieldMismatch { dest, .. } => {
            dest.clone()
        }
        ProblemKind::SubsectionMissing { name } => name.clone(),
        ProblemKind::ExtraDestField { version_id } => version_id.to_string(),
        ProblemKind::UnusedUncovered { bytes } => bytes.to_string(),
        ProblemKind::SectionMissing
        | ProblemKind::DestFieldsExhausted
        | ProblemKind::UnusedSizeMismatch
        | ProblemKind::MissingDescription => String::new(),
    };
    let field = match p.kind {
        ProblemKind::VersionError { .. } | ProblemKind::MinimumVersionError { .. } => None,
        _ => p.field.clone(),
    };
    (
        p.section.clone(),
        p.description_name().map(str::to_string),
        field,
        p.kind.name(),
        detail,
    )
}

/// One run in QEMU's output file.
#[derive(Debug)]
struct Run {
    reverse: bool,
    warning: Option<String>,
    lines: Vec<String>,
    keys: Vec<Key>,
    exit: u8,
}

/// Parses one line of QEMU's checker output into a [`Key`]. The quoted names are taken
/// out first (`"` never occurs inside them); what is left identifies the message.
fn parse_line(line: &str) -> Key {
    let parts: Vec<&str> = line.split('"').collect();
    let q: Vec<String> = parts
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_string())
        .collect();
    let template: String = parts
        .iter()
        .enumerate()
        .map(|(i, p)| if i % 2 == 1 { "Q" } else { p })
        .collect();
    let s = |i: usize| q[i].clone();
    let nums = |rest: &str, sep: char| -> String {
        rest.split(sep)
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    match template.as_str() {
        "Section Q does not exist in dest" => (s(0), None, None, "section-missing", String::new()),
        "Section Q, Description Q: expected field Q, got Q; skipping rest" => {
            (s(0), Some(s(1)), Some(s(2)), "field-mismatch", s(3))
        }
        "Section Q, Description Q: expected field Q, while dest has no further fields" => (
            s(0),
            Some(s(1)),
            Some(s(2)),
            "dest-fields-exhausted",
            String::new(),
        ),
        "Section Q, Description Q: Subsection Q not found" => {
            (s(0), Some(s(1)), None, "subsection-missing", s(2))
        }
        "Section Q, Description Q: unused size mismatch near Q" => (
            s(0),
            Some(s(1)),
            Some(s(2)),
            "unused-size-mismatch",
            String::new(),
        ),
        "Section Q Description Q: Entry Q missing" => {
            (s(0), Some(s(1)), None, "entry-missing", s(2))
        }
        "Section Q: Entry Q missing" => (s(0), None, None, "entry-missing", s(1)),
        "Section Q: Description Q missing, got Q instead; skipping" => {
            (s(0), Some(s(1)), None, "description-mismatch", s(2))
        }
        "Section Q, Description Q, Field Q: missing description" => (
            s(0),
            Some(s(1)),
            Some(s(2)),
            "missing-description",
            String::new(),
        ),
        t => {
            if let Some(rest) = t.strip_prefix("Section Q Description Q: version error:") {
                (s(0), Some(s(1)), None, "version-error", nums(rest, '>'))
            } else if let Some(rest) = t.strip_prefix("Section Q version error:") {
                (s(0), None, None, "version-error", nums(rest, '>'))
            } else if let Some(rest) =
                t.strip_prefix("Section Q Description Q: minimum version error:")
            {
                (
                    s(0),
                    Some(s(1)),
                    None,
                    "minimum-version-error",
                    nums(rest, '<'),
                )
            } else if let Some(rest) =
                t.strip_prefix("Section Q Description Q Field Q size mismatch:")
            {
                (
                    s(0),
                    Some(s(1)),
                    Some(s(2)),
                    "size-mismatch",
                    nums(rest, ','),
                )
            } else {
                panic!("unknown checker output line: {line}")
            }
        }
    }
}

fn qemu_runs() -> Vec<Run> {
    let text = String::from_utf8(read_qemu10("static-checker-qemu7.2-to-qemu10.txt")).unwrap();
    let mut runs = Vec::new();
    for block in text.split("$ ").filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let cmd = lines.next().unwrap();
        assert!(cmd.contains("-s vmstate-pc-qemu7.2.json"), "{cmd}");
        let mut run = Run {
            reverse: cmd.contains("--reverse"),
            warning: None,
            lines: Vec::new(),
            keys: Vec::new(),
            exit: 0,
        };
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some(code) = line.strip_prefix("[exit ") {
                run.exit = code.trim_end_matches(']').parse().unwrap();
            } else if line.starts_with("Warning: ") {
                run.warning = Some(line.to_string());
            } else {
                run.keys.push(parse_line(line));
                run.lines.push(line.to_string());
            }
        }
        assert_eq!(run.exit as usize, run.lines.len());
        runs.push(run);
    }
    assert_eq!(runs.len(), 2);
    runs
}

fn dumps() -> (Dump, Dump) {
    let dump = |name| Dump::from_json(read_qemu10_json(name)).unwrap();
    (
        dump("vmstate-pc-qemu7.2.json"),
        dump("vmstate-pc-qemu10.0.2.json"),
    )
}

/// Runs our checker as QEMU's command line does: `-s 7.2 -d 10.0.2 [--reverse]`.
fn run(reverse: bool, opts: &CheckOptions) -> Vec<Problem> {
    let (old, new) = dumps();
    if reverse {
        check::check_reverse(&old, &new, opts)
    } else {
        check::check(&old, &new, opts)
    }
}

#[test]
fn qemu_output_parses() {
    let runs = qemu_runs();
    assert_eq!((runs[0].reverse, runs[0].exit), (false, 16));
    assert_eq!((runs[1].reverse, runs[1].exit), (true, 39));
}

#[test]
fn we_report_every_problem_qemu_reports() {
    for qemu in qemu_runs() {
        let ours: BTreeSet<Key> = run(qemu.reverse, &CheckOptions::default())
            .iter()
            .map(key)
            .collect();
        let missing: Vec<&Key> = qemu.keys.iter().filter(|k| !ours.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "reverse={}: QEMU reports problems we miss: {missing:#?}",
            qemu.reverse
        );
    }
}

#[test]
fn in_qemu_mode_the_output_is_qemus_line_for_line() {
    let (old, new) = dumps();
    for qemu in qemu_runs() {
        let ours = run(qemu.reverse, &CheckOptions::qemu());
        let lines: Vec<String> = ours.iter().map(Problem::to_string).collect();
        assert_eq!(lines, qemu.lines, "reverse={}", qemu.reverse);
        assert_eq!(
            ours.iter().map(key).collect::<Vec<_>>(),
            qemu.keys,
            "reverse={}",
            qemu.reverse
        );
        assert_eq!(check::exit_code(&ours), qemu.exit);
        let warning = if qemu.reverse {
            check::machine_warning(&new, &old)
        } else {
            check::machine_warning(&old, &new)
        };
        assert_eq!(warning, qemu.warning);
    }
}

#[test]
fn extra_problems_found_by_our_rules() {
    // Computed with the default options and inspected by hand:
    //
    // 7.2 -> 10.0.2: one. QEMU 7.2's `vhost-user-fs` description has no field list at
    // all (the device was `unmigratable` then), so QEMU's checker compares nothing;
    // 10.0.2's has `virtio` (VMSTATE_VIRTIO_DEVICE, version 0, no test), which a 10.0.2
    // destination would read although the 7.2 source sends nothing. (The migration
    // could not happen anyway: 7.2 refuses to migrate the device. The dump does not
    // record `unmigratable`, so the checker cannot know.)
    //
    // 10.0.2 -> 7.2: none. No dest section raised its minimum version above the src
    // version, and no dest field list is longer than the src one it was matched with.
    for (reverse, expected) in [
        (
            false,
            vec![
                r#"Section "vhost-user-fs-device", Description "vhost-user-fs": dest has extra field "virtio" (version_id 0) that src does not send"#,
            ],
        ),
        (true, vec![]),
    ] {
        let all = run(reverse, &CheckOptions::default());
        let extra: Vec<String> = all
            .iter()
            .filter(|p| p.is_extra())
            .map(Problem::to_string)
            .collect();
        assert_eq!(extra, expected, "reverse={reverse}");
        let p = all.iter().find(|p| p.is_extra());
        if let Some(p) = p {
            assert_eq!(p.kind, ProblemKind::ExtraDestField { version_id: 0 });
            assert_eq!(p.description, ["vhost-user-fs"]);
            assert_eq!(p.field.as_deref(), Some("virtio"));
        }
        // Everything else is exactly QEMU's list.
        let qemu_only: Vec<Problem> = all.into_iter().filter(|p| !p.is_extra()).collect();
        assert_eq!(qemu_only, run(reverse, &CheckOptions::qemu()));
    }
    assert_eq!(check::exit_code(&run(false, &CheckOptions::default())), 17);
    assert_eq!(check::exit_code(&run(true, &CheckOptions::default())), 39);
}

#[test]
fn upstream_rename_list_accepts_the_hpet_rename() {
    let upstream = CheckOptions {
        renames: Renames::Upstream,
        ..CheckOptions::default()
    };
    for reverse in [false, true] {
        let with = run(reverse, &CheckOptions::default());
        let without = run(reverse, &upstream);
        let dropped: Vec<String> = with
            .iter()
            .filter(|p| !without.contains(p))
            .map(Problem::to_string)
            .collect();
        let (a, b) = if reverse {
            ("num_timers_save", "num_timers")
        } else {
            ("num_timers", "num_timers_save")
        };
        assert_eq!(
            dropped,
            [format!(
                r#"Section "hpet", Description "hpet": expected field "{a}", got "{b}"; skipping rest"#
            )]
        );
        // Nothing else in hpet: the timers and subsections agree.
        assert!(without.iter().all(|p| p.section != "hpet"), "{without:#?}");
    }
}

#[test]
fn json_report() {
    let problems = run(true, &CheckOptions::default());
    let json = check::problems_to_json(&problems);
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 39);
    let esp = arr
        .iter()
        .find(|p| p["section"] == "am53c974" && p["kind"] == "version-error")
        .unwrap();
    assert_eq!(esp["description"], serde_json::json!(["pciespscsi", "esp"]));
    assert_eq!(esp["src"], 7);
    assert_eq!(esp["dest"], 6);
    assert_eq!(
        esp["text"],
        r#"Section "am53c974" Description "esp": version error: 7 > 6"#
    );
}
