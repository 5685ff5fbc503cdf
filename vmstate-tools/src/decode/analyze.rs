//! The decoded state as JSON in the shape of QEMU's `analyze-migration.py -d state`
//! (spec 6), so that the two outputs can be diffed.
//!
//! * keys `"<idstr> (<section_id>)"`, in the order section ids were first seen;
//! * integers as hex strings zero-padded to twice their size, negative signed ones as
//!   `"0xfffffffe (-2)"`; bools as JSON booleans; NULL pointers as `"nullptr"`;
//!   everything else as space-separated hex bytes;
//! * repeated names (arrays) become lists, structs and subsections nested objects;
//! * RAM: `{"section sizes": {...}}`, plus `"memory"` with page contents when asked
//!   (the script crashes there on non-zero pages; this prints them as hex).
//!
//! Python's dict rules are followed where they matter: a field name seen again turns
//! into a list, a subsection name replaces what had that name, and a RAM page sent
//! twice keeps its first position and its last contents. Output is written as
//! Python's `json` module does with `indent=4` (`ensure_ascii`, separators `,` and
//! `: `; [`Style::PYTHON`]), followed by a newline, and is streamed: page contents are
//! read from the source one page at a time.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use vmstate::qjson::{Emitter, Style};

use super::desc::FieldKind;
use super::encode::PageSource;
use super::json::Json;
use super::value::*;
use vmstate::Error;

/// What to include in the state dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// Add each RAM section's `"memory"` object (page contents as hex).
    pub memory: bool,
    /// Show `qtailq`, `qlist`, `gtree`, `tmp` and `vstruct` entries decoded with their
    /// inline descriptions (a list of element objects; a gtree's as `{"key", "value"}`
    /// objects; a `tmp`/`vstruct` as one object) instead of the hex string the script
    /// prints. Entries whose bytes the descriptions do not account for stay hex.
    pub expand: bool,
}

/// Space-separated lowercase hex bytes, as the script prints raw fields.
pub fn hex_bytes(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = Vec::with_capacity(b.len() * 3);
    for (i, &x) in b.iter().enumerate() {
        if i > 0 {
            s.push(b' ');
        }
        s.push(HEX[(x >> 4) as usize]);
        s.push(HEX[(x & 15) as usize]);
    }
    String::from_utf8(s).expect("hex digits are ASCII")
}

enum Node<'s> {
    Str(String),
    Bool(bool),
    List(Vec<Node<'s>>),
    Dict(Dict<'s>),
    /// A RAM section's `memory` object, rendered from its page records.
    Memory(Vec<MemEvent<'s>>),
}

/// A page record of a RAM section, in stream order, for the `memory` object.
enum MemEvent<'s> {
    /// Consecutive full or zero pages.
    Run(&'s PageRun),
    /// An XBZRLE record: changes to what the page held.
    Delta {
        block: Arc<str>,
        addr: u64,
        page_size: u64,
        /// The encoded runs (after the encoding byte and the length).
        encoded: &'s [u8],
    },
}

/// An ordered dict with Python's insertion rules.
#[derive(Default)]
struct Dict<'s> {
    entries: Vec<(String, Node<'s>)>,
    index: HashMap<String, usize>,
}

impl<'s> Dict<'s> {
    /// `data[k] = v`, keeping the position of an existing key.
    fn set(&mut self, k: String, v: Node<'s>) {
        match self.index.get(&k) {
            Some(&i) => self.entries[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.entries.len());
                self.entries.push((k, v));
            }
        }
    }

    /// The script's rule for field values: the first value of a name is stored as
    /// is, a second one turns it into a list, later ones are appended.
    fn add_field(&mut self, k: &str, v: Node<'s>) {
        match self.index.get(k) {
            None => self.set(k.to_string(), v),
            Some(&i) => {
                let slot = &mut self.entries[i].1;
                if let Node::List(l) = slot {
                    l.push(v);
                } else {
                    let old = std::mem::replace(slot, Node::Bool(false));
                    *slot = Node::List(vec![old, v]);
                }
            }
        }
    }
}

enum SectionObj<'s> {
    Ram {
        sizes: Dict<'s>,
        runs: Vec<MemEvent<'s>>,
    },
    Vmsd(Dict<'s>),
}

/// Writes the `-d state` JSON of `stream` to `out`. Page contents (with
/// `opts.memory`) come from the tree or, for pages kept as references, from `pages`.
pub fn write_state_json(
    stream: &Stream,
    out: &mut dyn Write,
    pages: Option<&mut dyn PageSource>,
    opts: &DumpOptions,
) -> Result<(), Error> {
    // Sections by id, in first-seen order, with the idstr of the latest START/FULL.
    let mut order: Vec<(u32, String, SectionObj<'_>)> = Vec::new();
    let mut by_id: HashMap<u32, usize> = HashMap::new();
    // The block of the last page record (for CONTINUE), and the page size.
    let mut last_block: Option<Arc<str>> = None;
    let page_size = stream.desc.as_ref().map_or(4096, |d| d.page_size);
    for rec in &stream.records {
        let RecordBody::Section(s) = &rec.body else {
            continue;
        };
        let h = &s.header;
        if h.kind.has_full_header() {
            let obj = match &s.payload {
                Payload::Ram(_) => SectionObj::Ram {
                    sizes: Dict::default(),
                    runs: Vec::new(),
                },
                Payload::Vmsd(_) => SectionObj::Vmsd(Dict::default()),
            };
            match by_id.get(&h.section_id) {
                Some(&i) => order[i] = (h.section_id, h.idstr.clone(), obj),
                None => {
                    by_id.insert(h.section_id, order.len());
                    order.push((h.section_id, h.idstr.clone(), obj));
                }
            }
        }
        let Some(&i) = by_id.get(&h.section_id) else {
            continue;
        };
        match (&mut order[i].2, &s.payload) {
            (SectionObj::Vmsd(d), Payload::Vmsd(v)) => apply_struct(d, v, opts.expand),
            (SectionObj::Ram { sizes, runs }, Payload::Ram(p)) => {
                for r in &p.records {
                    if let RamRecord::Pages(run) = r {
                        last_block = Some(run.block.clone());
                    }
                    match r {
                        RamRecord::MemSize { blocks, .. } => {
                            for b in blocks {
                                sizes.set(
                                    b.name.clone(),
                                    Node::Str(format!("0x{:016x}", b.used_length)),
                                );
                            }
                        }
                        RamRecord::Pages(run) => runs.push(MemEvent::Run(run)),
                        RamRecord::Xbzrle { word, block, data } => {
                            if let Some(name) = block {
                                last_block = Some(Arc::from(name.as_str()));
                            }
                            // A CONTINUE before any named record cannot decode.
                            if let Some(block) = last_block.clone() {
                                runs.push(MemEvent::Delta {
                                    block,
                                    addr: word & !(page_size - 1),
                                    page_size,
                                    encoded: &data[3..],
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut top = Dict::default();
    for (id, name, obj) in order {
        let node = match obj {
            SectionObj::Vmsd(d) => Node::Dict(d),
            SectionObj::Ram { sizes, runs } => {
                let mut d = Dict::default();
                d.set("section sizes".into(), Node::Dict(sizes));
                if opts.memory {
                    d.set("memory".into(), Node::Memory(runs));
                }
                Node::Dict(d)
            }
        };
        top.set(format!("{name} ({id})"), node);
    }
    let mut w = PyWriter {
        out,
        json: Emitter::new(Style::PYTHON),
        pages,
        page: Vec::new(),
    };
    w.node(&Node::Dict(top))?;
    w.flush(true)?;
    w.out
        .write_all(b"\n")
        .and_then(|()| w.out.flush())
        .map_err(|e| Error::malformed(format!("writing the JSON: {e}")))
}

/// The `-d state` JSON as a string (pages must be in the tree if `memory` is set).
pub fn state_json_string(stream: &Stream, opts: &DumpOptions) -> Result<String, Error> {
    let mut v = Vec::new();
    write_state_json(stream, &mut v, None, opts)?;
    String::from_utf8(v).map_err(|_| Error::malformed("non-UTF-8 JSON output"))
}

/// The vmdesc JSON as the script prints it with `-d desc` and writes it to `desc.json`
/// with `-x` ([`Style::PYTHON`], without a final newline): members in their order with
/// duplicate keys kept.
pub fn desc_json_string(json: &Json) -> String {
    Style::PYTHON.to_string_json(json)
}

fn apply_struct<'s>(d: &mut Dict<'s>, s: &'s StructValue, expand: bool) {
    for f in &s.fields {
        let desc = s.field_desc(f);
        let node = match (&f.value, expand) {
            (Value::Inline(i), true) => inline_node(desc.ty.as_deref(), i),
            _ => None,
        };
        let node = node.unwrap_or_else(|| value_node(desc.kind, desc.size, &f.value, expand));
        d.add_field(&desc.name, node);
    }
    for sub in &s.subsections {
        let mut sd = Dict::default();
        apply_struct(&mut sd, &sub.body, expand);
        d.set(sub.name.clone(), Node::Dict(sd));
    }
}

/// An inline entry decoded into its elements (see [`DumpOptions::expand`]); `None` when
/// its bytes did not decode.
fn inline_node<'s>(ty: Option<&str>, i: &'s InlineValue) -> Option<Node<'s>> {
    let elements = i.elements.as_ref()?;
    let dict = |s: &'s StructValue| {
        let mut d = Dict::default();
        apply_struct(&mut d, s, true);
        Node::Dict(d)
    };
    Some(match ty {
        Some("gtree") => {
            let node = |key: Node<'s>, value: &'s StructValue| {
                let mut d = Dict::default();
                d.set("key".into(), key);
                d.set("value".into(), dict(value));
                Node::Dict(d)
            };
            if i.direct_keys.is_empty() {
                let pairs = elements.chunks_exact(2);
                Node::List(pairs.map(|kv| node(dict(&kv[0]), &kv[1])).collect())
            } else {
                let keys = i.direct_keys.iter();
                let nodes = keys
                    .zip(elements)
                    .map(|(k, v)| node(Node::Str(format!("0x{k:016x}")), v));
                Node::List(nodes.collect())
            }
        }
        Some("qtailq" | "qlist") => Node::List(elements.iter().map(dict).collect()),
        _ => dict(elements.first()?),
    })
}

fn value_node<'s>(kind: FieldKind, size: Option<u64>, v: &'s Value, expand: bool) -> Node<'s> {
    match v {
        Value::Int(x) => Node::Str(int_str(kind, size.unwrap_or(8).clamp(1, 8), *x)),
        Value::Bool(b) => Node::Bool(*b != 0),
        Value::Nullptr => Node::Str("nullptr".into()),
        Value::Capability(c) => Node::Str(c.clone()),
        Value::Bytes(b) => match kind {
            FieldKind::Int { signed } => Node::Str(big_int_str(signed, b)),
            FieldKind::Bool => Node::Bool(b.first().is_some_and(|&x| x != 0)),
            _ => Node::Str(hex_bytes(b)),
        },
        Value::Struct(s) => {
            let mut d = Dict::default();
            apply_struct(&mut d, s, expand);
            Node::Dict(d)
        }
        Value::Inline(i) => Node::Str(hex_bytes(&i.bytes)),
    }
}

/// `'0x%0{2n}x' % value`, with `' (%d)'` of the signed value when it is negative.
fn int_str(kind: FieldKind, size: u64, raw: u64) -> String {
    let width = (size * 2) as usize;
    let bits = size * 8;
    let signed = matches!(kind, FieldKind::Int { signed: true });
    let neg = signed && (raw >> (bits - 1)) & 1 == 1;
    if neg {
        let s = if bits == 64 {
            raw as i64 as i128
        } else {
            raw as i128 - (1i128 << bits)
        };
        format!("0x{raw:0width$x} ({s})")
    } else {
        format!("0x{raw:0width$x}")
    }
}

/// [`int_str`] for integers of unusual sizes (Python's ints have no width limit).
fn big_int_str(signed: bool, b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let hex = if hex.is_empty() { "0".to_string() } else { hex };
    if !(signed && b.first().is_some_and(|&x| x & 0x80 != 0)) {
        return format!("0x{hex}");
    }
    // Two's complement magnitude, then decimal by repeated division.
    let mut mag: Vec<u8> = b.iter().map(|x| !x).collect();
    for x in mag.iter_mut().rev() {
        let (v, carry) = x.overflowing_add(1);
        *x = v;
        if !carry {
            break;
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&x| x != 0) {
        let mut rem = 0u32;
        for x in mag.iter_mut() {
            let cur = (rem << 8) | *x as u32;
            *x = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    digits.reverse();
    format!("0x{hex} (-{})", String::from_utf8_lossy(&digits))
}

/// Writes the tree as the script prints it ([`Style::PYTHON`]), handing the text to
/// `out` every [`PyWriter::CHUNK`] bytes or so.
struct PyWriter<'w, 'p> {
    out: &'w mut dyn Write,
    json: Emitter,
    pages: Option<&'p mut dyn PageSource>,
    page: Vec<u8>,
}

impl PyWriter<'_, '_> {
    const CHUNK: usize = 1 << 16;

    /// Hands the text so far to `out` once there is a chunk of it (or always, with
    /// `all`).
    fn flush(&mut self, all: bool) -> Result<(), Error> {
        if all || self.json.text().len() >= Self::CHUNK {
            self.json
                .write_to(self.out)
                .map_err(|e| Error::malformed(format!("writing the JSON: {e}")))?;
        }
        Ok(())
    }

    fn node(&mut self, n: &Node<'_>) -> Result<(), Error> {
        match n {
            Node::Str(s) => self.json.string(s),
            Node::Bool(b) => self.json.literal(if *b { "true" } else { "false" }),
            Node::List(l) => {
                self.json.begin_array();
                for v in l {
                    self.node(v)?;
                }
                self.json.end_array();
            }
            Node::Dict(d) => {
                self.json.begin_object();
                for (k, v) in &d.entries {
                    self.json.key(k);
                    self.node(v)?;
                    self.flush(false)?;
                }
                self.json.end_object();
            }
            Node::Memory(runs) => self.memory(runs)?,
        }
        Ok(())
    }

    /// The `memory` object: one member per page, a page sent twice at its first
    /// position with its last contents. XBZRLE records change the page as the
    /// destination has it: the last full or zero page before them (zeros if none).
    fn memory(&mut self, events: &[MemEvent<'_>]) -> Result<(), Error> {
        type Key = (Arc<str>, u64);
        /// The last full or zero page (event, index in its run), and the XBZRLE
        /// records after it (events), in order.
        type History = (Option<(usize, u64)>, Vec<usize>);
        let mut last: HashMap<Key, History> = HashMap::new();
        let mut order: Vec<Key> = Vec::new();
        for (ei, e) in events.iter().enumerate() {
            match e {
                MemEvent::Run(run) => {
                    for i in 0..run.count {
                        let key = (run.block.clone(), run.addr + i * run.page_size);
                        let slot = last.entry(key.clone()).or_insert_with(|| {
                            order.push(key);
                            (None, Vec::new())
                        });
                        *slot = (Some((ei, i)), Vec::new());
                    }
                }
                MemEvent::Delta { block, addr, .. } => {
                    let key = (block.clone(), *addr);
                    last.entry(key.clone())
                        .or_insert_with(|| {
                            order.push(key);
                            (None, Vec::new())
                        })
                        .1
                        .push(ei);
                }
            }
        }
        self.json.begin_object();
        for key in order {
            let (base, deltas) = &last[&key];
            self.json.key(&format!("{} (0x{:016x})", key.0, key.1));
            let page_size = match base {
                Some((ei, _)) => match &events[*ei] {
                    MemEvent::Run(run) => run.page_size,
                    MemEvent::Delta { page_size, .. } => *page_size,
                },
                None => match &events[deltas[0]] {
                    MemEvent::Run(run) => run.page_size,
                    MemEvent::Delta { page_size, .. } => *page_size,
                },
            };
            match base {
                Some((ei, i)) => match &events[*ei] {
                    MemEvent::Run(run) if run.zero => {
                        if deltas.is_empty() {
                            self.json.string("Filled with 0x00");
                            continue;
                        }
                        self.page.clear();
                        self.page.resize(page_size as usize, 0);
                    }
                    MemEvent::Run(run) => self.load_page(run, *i)?,
                    MemEvent::Delta { .. } => unreachable!("a base is a page run"),
                },
                None => {
                    self.page.clear();
                    self.page.resize(page_size as usize, 0);
                }
            }
            for &di in deltas {
                let MemEvent::Delta { encoded, .. } = &events[di] else {
                    unreachable!("deltas are XBZRLE records");
                };
                let page = &mut self.page;
                vmstate::ram::xbzrle::decode(encoded, page.len(), |at, bytes| {
                    page[at..at + bytes.len()].copy_from_slice(bytes)
                })
                .map_err(|e| {
                    Error::malformed(format!(
                        "XBZRLE page 0x{:x} of block '{}': {e}",
                        key.1, key.0
                    ))
                })?;
            }
            self.json.string(&hex_bytes(&self.page));
            self.flush(false)?;
        }
        self.json.end_object();
        Ok(())
    }

    fn load_page(&mut self, run: &PageRun, i: u64) -> Result<(), Error> {
        let ps = run.page_size as usize;
        if let Some(d) = &run.data {
            let start = i as usize * ps;
            self.page.clear();
            self.page.extend_from_slice(&d[start..start + ps]);
            return Ok(());
        }
        let Some(src) = self.pages.as_mut() else {
            return Err(Error::malformed(
                "page contents are not in the tree and no page source was given",
            ));
        };
        self.page.resize(ps, 0);
        let at = run.body_offset(i);
        src.read_at(at, &mut self.page)
            .map_err(|e| Error::malformed(format!("reading page data: {e}")).at_offset(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_look_like_the_script() {
        let s = FieldKind::Int { signed: true };
        let u = FieldKind::Int { signed: false };
        assert_eq!(int_str(s, 4, 0xffff_fffe), "0xfffffffe (-2)");
        assert_eq!(int_str(u, 4, 0xffff_fffe), "0xfffffffe");
        assert_eq!(int_str(s, 2, 0x7f), "0x007f");
        assert_eq!(int_str(s, 8, u64::MAX), "0xffffffffffffffff (-1)");
        assert_eq!(big_int_str(true, &[0xff; 9]), "0xffffffffffffffffff (-1)");
        assert_eq!(
            big_int_str(false, &[1, 0, 0, 0, 0, 0, 0, 0, 0]),
            "0x010000000000000000"
        );
        assert_eq!(
            big_int_str(true, &[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "0x80000000000000000000 (-604462909807314587353088)"
        );
    }

    #[test]
    fn desc_prints_like_python_indent_4_with_duplicates_and_numbers_as_python_reads_them() {
        // Python's json.loads reads 1.50 as the float 1.5 and json.dumps prints 1.5.
        let j = Json::parse(
            br#"{"a": [1, {"b": null}], "c": {}, "d": [], "a": 1.50, "s": "\u00e9\n"}"#,
        )
        .unwrap();
        assert_eq!(
            desc_json_string(&j),
            "{\n    \"a\": [\n        1,\n        {\n            \"b\": null\n        }\n    ],\n    \
             \"c\": {},\n    \"d\": [],\n    \"a\": 1.5,\n    \"s\": \"\\u00e9\\n\"\n}"
        );
    }

    #[test]
    fn repeated_names_become_lists() {
        let mut d = Dict::default();
        d.add_field("a", Node::Str("1".into()));
        d.add_field("a", Node::Str("2".into()));
        d.add_field("a", Node::Str("3".into()));
        d.add_field("b", Node::Bool(true));
        assert!(matches!(&d.entries[0].1, Node::List(l) if l.len() == 3));
        assert_eq!(d.entries.len(), 2);
    }
}
