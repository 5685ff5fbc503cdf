//! Sections, descriptions and subsections: QEMU's `check_version`,
//! `check_descriptions`, `check_subsections` and `check_description_in_list`, and the
//! loop over the sections of the two dumps.

use vmstate::schema::{Description, Dump, Field};

use super::renames::renamed_section;
use super::{Checker, ProblemKind};

impl Checker<'_> {
    /// Every src section against its dest counterpart, in src order.
    pub(super) fn check_sections(&mut self, src: &Dump, dest: &Dump) {
        for (sec, s) in src.sections() {
            let d = dest
                .section(sec)
                .or_else(|| renamed_section(sec).and_then(|n| dest.section(n)));
            let Some(d) = d else {
                let msg = "does not exist in dest".to_string();
                self.report(sec, &[], None, ProblemKind::SectionMissing, msg);
                continue;
            };
            let dest_versions = (d.version_id, Some(d.minimum_version_id));
            self.check_version(sec, &[], None, s.version_id, dest_versions);
            // A section is loaded at the version in its header: src's.
            let load = s.description.version_id;
            self.check_description(&s.description, &d.description, sec, &[], load);
        }
    }

    /// QEMU's `check_version`: `src` is the src `version_id`, `dest` the dest
    /// `version_id` and `minimum_version_id` (none for a field). `path` is empty for a
    /// section, `field` is set for a field.
    pub(super) fn check_version(
        &mut self,
        sec: &str,
        path: &[String],
        field: Option<&str>,
        src: u32,
        dest: (u32, Option<u32>),
    ) {
        let (sv, dv) = (i64::from(src), i64::from(dest.0));
        if sv > dv {
            let kind = ProblemKind::VersionError { src: sv, dest: dv };
            let msg = format!("version error: {sv} > {dv}");
            self.report(sec, path, field, kind, msg);
        }
        let Some(dmin) = dest.1.map(i64::from) else {
            return;
        };
        // QEMU only reports this with a description: a section-level one is lost to an
        // indentation slip in the script. Reporting it is one of our extra rules.
        if sv < dmin && (!path.is_empty() || self.opts.extra_rules) {
            let kind = ProblemKind::MinimumVersionError {
                src: sv,
                dest_min: dmin,
            };
            let msg = format!("minimum version error: {sv} < {dmin}");
            self.report(sec, path, field, kind, msg);
        }
    }

    /// QEMU's `check_descriptions`. `parent` is the path above this description;
    /// `load_version` the version dest loads its fields at.
    pub(super) fn check_description(
        &mut self,
        s: &Description,
        d: &Description,
        sec: &str,
        parent: &[String],
        load_version: u32,
    ) {
        let name = &s.name;
        let mut path = parent.to_vec();
        path.push(name.clone());
        let dest_versions = (d.version_id, Some(d.minimum_version_id));
        self.check_version(sec, &path, None, s.version_id, dest_versions);

        if !self.fields_match(sec, name, &d.name) {
            let kind = ProblemKind::DescriptionMismatch {
                src: name.clone(),
                dest: d.name.clone(),
            };
            let msg = format!(
                "Description \"{name}\" missing, got \"{}\" instead; skipping",
                d.name
            );
            self.report(sec, &path, None, kind, msg);
            return;
        }

        if self.opts.extra_rules && s.fields.is_none() && d.fields.is_some() {
            // src has no field list at all (QEMU skips the comparison): every dest field
            // is an extra one.
            self.check_fields(&[], d.fields(), sec, &path, load_version);
        }
        // The lists src has, in QEMU's key order.
        if let Some(src_fields) = &s.fields {
            match &d.fields {
                Some(dest_fields) => {
                    self.check_fields(src_fields, dest_fields, sec, &path, load_version)
                }
                None => self.entry_missing(sec, &path, "Fields"),
            }
        }
        if let Some(src_subs) = &s.subsections {
            match &d.subsections {
                Some(dest_subs) => self.check_subsections(src_subs, dest_subs, sec, &path),
                None => self.entry_missing(sec, &path, "Subsections"),
            }
        }
    }

    /// A key of the src description that dest does not have.
    fn entry_missing(&mut self, sec: &str, path: &[String], entry: &str) {
        let kind = ProblemKind::EntryMissing {
            entry: entry.to_string(),
        };
        self.report(sec, path, None, kind, format!("Entry \"{entry}\" missing"));
    }

    /// QEMU's `check_subsections`: each src subsection must exist in dest, by name.
    fn check_subsections(
        &mut self,
        src: &[Description],
        dest: &[Description],
        sec: &str,
        path: &[String],
    ) {
        for s in src {
            let mut found = false;
            for d in dest.iter().filter(|d| d.name == s.name) {
                found = true;
                // A subsection is loaded at the version in its header: src's.
                self.check_description(s, d, sec, path, s.version_id);
            }
            if !found {
                let kind = ProblemKind::SubsectionMissing {
                    name: s.name.clone(),
                };
                let msg = format!("Subsection \"{}\" not found", s.name);
                self.report(sec, path, None, kind, msg);
            }
        }
    }

    /// QEMU's `check_description_in_list`: a src struct field's description against
    /// dest's.
    pub(super) fn check_description_in_list(
        &mut self,
        s: &Field,
        d: &Field,
        sec: &str,
        path: &[String],
    ) {
        let Some(sd) = &s.description else {
            return;
        };
        let Some(dd) = &d.description else {
            let msg = "missing description".to_string();
            self.report(
                sec,
                path,
                Some(&s.name),
                ProblemKind::MissingDescription,
                msg,
            );
            return;
        };
        // QEMU loads a nested struct at its own (dest) version.
        self.check_description(sd, dd, sec, path, dd.version_id);
    }
}
