//! Field lists: QEMU's `check_fields`, step for step (names and renames, fields moved
//! into or out of substructs, the `unused` balancing, versions and sizes), plus the
//! extra rule on dest fields after the last src field.

use vmstate::schema::Field;

use super::{Checker, ProblemKind};

/// Stands for "no field yet" before the first one is taken (QEMU's `None`), so that the
/// walk below reads as QEMU's.
static NO_FIELD: Field = Field {
    name: String::new(),
    version_id: 0,
    field_exists: false,
    num: None,
    size: 0,
    description: None,
};

/// `size`, times `num` when present. QEMU's `size_total`.
fn size_total(field: &Field) -> i64 {
    let size = field.size as i64;
    match field.num {
        Some(num) => size.wrapping_mul(num as i64),
        None => size,
    }
}

/// A position in a field list, with the version dest loads that list at.
struct Cursor<'v> {
    items: &'v [Field],
    pos: usize,
    load_version: u32,
}

impl<'v> Cursor<'v> {
    fn new(items: &'v [Field], load_version: u32) -> Self {
        Cursor {
            items,
            pos: 0,
            load_version,
        }
    }

    /// The field list of the struct `item`, at its own version.
    fn inside(item: &'v Field) -> Self {
        match &item.description {
            Some(d) => Cursor::new(d.fields(), d.version_id),
            None => Cursor::new(&[], 0),
        }
    }

    fn next(&mut self) -> Option<&'v Field> {
        let item = self.items.get(self.pos)?;
        self.pos += 1;
        Some(item)
    }

    fn rest(&self) -> &'v [Field] {
        &self.items[self.pos.min(self.items.len())..]
    }
}

impl Checker<'_> {
    /// QEMU's `exists_in_substruct`: `item` is a struct whose first field matches
    /// `other` (by name or by its description's rename list).
    fn exists_in_substruct(&self, item: &Field, other: &str) -> bool {
        let Some(desc) = &item.description else {
            return false;
        };
        match desc.fields().first() {
            Some(first) => self.fields_match(&desc.name, &first.name, other),
            None => false,
        }
    }

    /// QEMU's `check_fields`, step for step, plus the trailing-dest-fields rule.
    pub(super) fn check_fields(
        &mut self,
        src: &[Field],
        dest: &[Field],
        sec: &str,
        path: &[String],
        load_version: u32,
    ) {
        let desc = path.last().map(String::as_str).unwrap_or("");
        let mut s_it = Cursor::new(src, load_version);
        let mut d_it = Cursor::new(dest, load_version);
        // Where to resume when a substruct we descended into is over.
        let mut s_stack: Vec<Cursor<'_>> = Vec::new();
        let mut d_stack: Vec<Cursor<'_>> = Vec::new();
        let mut advance_src = true;
        let mut advance_dest = true;
        let mut unused_count: i64 = 0;
        let mut s_item: &Field = &NO_FIELD;
        let mut d_item: &Field = &NO_FIELD;

        loop {
            if advance_src {
                match s_it.next() {
                    Some(item) => s_item = item,
                    None => match s_stack.pop() {
                        Some(outer) => {
                            s_it = outer;
                            continue;
                        }
                        None => {
                            if self.opts.extra_rules {
                                let unused_left = (!advance_dest).then_some(unused_count);
                                let levels = std::iter::once(&d_it).chain(d_stack.iter().rev());
                                self.trailing_dest(sec, path, d_item, unused_left, levels);
                            }
                            break;
                        }
                    },
                }
            } else if unused_count == 0 {
                // Not advancing just once: when entering or leaving a substruct.
                advance_src = true;
            }

            if advance_dest {
                match d_it.next() {
                    Some(item) => d_item = item,
                    None => match d_stack.pop() {
                        Some(outer) => {
                            d_it = outer;
                            advance_src = false;
                            continue;
                        }
                        None => {
                            let sf = &s_item.name;
                            let msg = format!(
                                "expected field \"{sf}\", while dest has no further fields"
                            );
                            self.report(sec, path, Some(sf), ProblemKind::DestFieldsExhausted, msg);
                            break;
                        }
                    },
                }
            } else if unused_count == 0 {
                advance_dest = true;
            }

            if unused_count != 0 {
                // Balancing an `unused` field against whole fields on the other side:
                // src fields while dest's `unused` waits, or the reverse. (QEMU
                // subtracts `size` here, not `size * num`.)
                let other = if !advance_dest {
                    Some((s_item, true))
                } else if !advance_src {
                    Some((d_item, false))
                } else {
                    None
                };
                if let Some((other, other_is_src)) = other {
                    unused_count -= other.size as i64;
                    if unused_count == 0 {
                        if other_is_src {
                            advance_dest = true;
                        } else {
                            advance_src = true;
                        }
                        continue;
                    }
                    if unused_count < 0 {
                        let of = &other.name;
                        let msg = format!("unused size mismatch near \"{of}\"");
                        self.report(sec, path, Some(of), ProblemKind::UnusedSizeMismatch, msg);
                        break;
                    }
                    continue;
                }
            }

            let (sf, df) = (&s_item.name, &d_item.name);
            if !self.fields_match(desc, sf, df) {
                // Fields moved into a substruct without a wire change: first a new dest
                // substruct, then a src substruct that dest removed.
                if self.exists_in_substruct(d_item, sf) {
                    d_stack.push(std::mem::replace(&mut d_it, Cursor::inside(d_item)));
                    advance_src = false;
                    continue;
                }
                if self.exists_in_substruct(s_item, df) {
                    s_stack.push(std::mem::replace(&mut s_it, Cursor::inside(s_item)));
                    advance_dest = false;
                    continue;
                }
                if sf == "unused" || df == "unused" {
                    let (s_size, d_size) = (size_total(s_item), size_total(d_item));
                    if s_size == d_size {
                        continue;
                    }
                    if df == "unused" {
                        advance_dest = false;
                        unused_count = d_size - s_size;
                        continue;
                    }
                    advance_src = false;
                    unused_count = s_size - d_size;
                    continue;
                }
                let kind = ProblemKind::FieldMismatch {
                    src: sf.clone(),
                    dest: df.clone(),
                };
                let msg = format!("expected field \"{sf}\", got \"{df}\"; skipping rest");
                self.report(sec, path, Some(sf), kind, msg);
                break;
            }

            self.check_version(
                sec,
                path,
                Some(sf),
                s_item.version_id,
                (d_item.version_id, None),
            );
            if s_item.description.is_none() {
                // Sizes are compared for primitives only (a struct's is its C sizeof).
                let (ss, ds) = (s_item.size as i64, d_item.size as i64);
                if ss != ds {
                    let kind = ProblemKind::SizeMismatch { src: ss, dest: ds };
                    let msg = format!("size mismatch: {ss} , {ds}");
                    self.report(sec, path, Some(sf), kind, msg);
                }
            }
            self.check_description_in_list(s_item, d_item, sec, path);
        }
    }

    /// Extra rule: src has no more fields, but dest would read more. `unused_left` is
    /// set when the last dest field is an `unused` the src fields only partly covered;
    /// `levels` are the dest lists still open, innermost first.
    fn trailing_dest<'v>(
        &mut self,
        sec: &str,
        path: &[String],
        d_item: &Field,
        unused_left: Option<i64>,
        levels: impl Iterator<Item = &'v Cursor<'v>>,
    ) {
        if let Some(bytes) = unused_left.filter(|&b| b > 0) {
            let df = &d_item.name;
            let msg = format!("dest field \"{df}\" expects {bytes} more byte(s) than src sends");
            let kind = ProblemKind::UnusedUncovered { bytes };
            self.report(sec, path, Some(df), kind, msg);
        }
        for level in levels {
            for item in level.rest() {
                // Fields with an `exists` test depend on run-time state (typically a
                // compat property): they are not reported.
                if item.field_exists || item.version_id > level.load_version {
                    continue;
                }
                let (df, version) = (&item.name, item.version_id);
                let msg = format!(
                    "dest has extra field \"{df}\" (version_id {version}) that src does not send"
                );
                let kind = ProblemKind::ExtraDestField {
                    version_id: i64::from(version),
                };
                self.report(sec, path, Some(df), kind, msg);
            }
        }
    }
}
