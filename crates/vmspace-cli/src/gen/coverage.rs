//! What a script exercised, judged only from the script and its output on
//! the host kernel: the [`Kind`]s of behaviour, counted into a [`Coverage`].
//!
//! Every count is a lower bound that can be computed honestly. Nothing here
//! models Linux; facts come from the output alone:
//!
//! * **Known state.** Only `mmap`, `munmap`, `mprotect` and `mremap` change
//!   the mappings (whatever their result). Between two such calls the layout
//!   is fixed, so a `maps` line anywhere in that stretch tells which mapping
//!   every `read`, `write` and `madvise` of the stretch touched, and what the
//!   layout was just before the call that ends the stretch. Counts that need
//!   to know a mapping are only taken where a `maps` line gives it.
//! * **Merges** ([`Kind::Merges`]). A *boundary* is a page number where one
//!   mapping was known to end and another begin (or a hole): the edges in a
//!   `maps` line, the edges of a successful `mmap`, `munmap`, `mremap` range,
//!   and the edges of a successful `mprotect` where the known mapping there had
//!   another protection (so the call must have split it). A call that maps or
//!   unmaps a whole range forgets the boundaries strictly inside it (they were
//!   replaced, not merged); a failed `mmap` or moving `mremap` forgets them
//!   too, to stay on the safe side. A merge is a boundary that the next `maps`
//!   line shows strictly inside one entry.
//! * **Splits** ([`Kind::Splits`]). A split is an edge of a `maps` line that
//!   lay strictly inside a range known to have been one mapping (an entry of
//!   the previous `maps` line, or a successful `mmap` since), without any
//!   later call having mapped, unmapped or moved a range around it (so the
//!   mapping was cut, not replaced wholesale). An `munmap` of the middle of a
//!   mapping counts two splits, its two cut points.
//! * **`mremap`**: successful in-place grows and shrinks; successful moves
//!   (4-argument form, old length above 0), among them those whose source
//!   range held several known mappings or holes ([`Kind::MultiMoves`]) and
//!   those whose target held a known mapping ([`Kind::MovesOverMappings`]);
//!   successful duplications (old length 0).
//! * **Copy-on-write breaks**: a successful `write P V` to a known private
//!   file mapping, followed in the same stretch by `read P` giving `V`, with
//!   `V` unlike the file's byte there. **COW isolation**: a read, through
//!   another page, of a file page that a known private mapping wrote,
//!   giving something else. **Shared visibility**: a read, through another
//!   page, of a file page that a known shared mapping wrote, giving the
//!   written value (which differs from the file's original byte).
//! * **Zero fill**: `read` giving 0 in a known anonymous mapping. **File
//!   reads**: `read` giving the file's original byte in a known file mapping.
//! * **`MADV_DONTNEED`**: a read of a page that was written, then covered by a
//!   successful `madvise`, in one stretch: *dropped* when the written value is
//!   gone, *kept* when it is still there (shared memory).
//! * **Faults**: every `SEGV` and `SIGBUS`; protection faults are the `SEGV`s
//!   on a page a known mapping holds. **Errors**: every `err NAME`, by name.
//! * **Rule cells** ([`Cell`], module `cells`): each case Linux's rules tell
//!   apart (the `mremap` matrix by shape of the old range, errors by call,
//!   check order, execute-only keys, limits), with the result line.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::cells::{cells_of, cells_of_maps, Cell};
use super::fork::ForkTracker;
use crate::script::{file_byte, Backing, Op, Prot};

/// One kind of behaviour [`classify`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Scripts classified.
    Scripts,
    /// Operations classified.
    Ops,
    /// `maps` lines.
    MapsLines,
    /// The most entries one `maps` line had (a maximum, not a sum).
    MaxMapsEntries,
    /// Boundaries that disappeared into one mapping (see the module docs).
    Merges,
    /// Points where a mapping was cut in place.
    Splits,
    /// Successful in-place `mremap` grows.
    Grows,
    /// Successful in-place `mremap` shrinks.
    Shrinks,
    /// Successful moving `mremap`s (old length above 0).
    Moves,
    /// Moves whose source held several mappings or a hole.
    MultiMoves,
    /// Moves whose target held a mapping.
    MovesOverMappings,
    /// Successful `mremap`s with old length 0 (duplicating shared memory).
    Duplications,
    /// Private file pages written and read back with the written value.
    CowBreaks,
    /// Reads of a privately written file page, elsewhere, not seeing the write.
    CowIsolated,
    /// Reads seeing a value written through a shared mapping, elsewhere.
    SharedVisible,
    /// Reads of 0 from anonymous memory.
    ZeroFillReads,
    /// Reads of a file's original byte.
    FileReads,
    /// Written pages whose value `MADV_DONTNEED` dropped.
    DontneedDropped,
    /// Written pages whose value survived `MADV_DONTNEED`.
    DontneedKept,
    /// `SEGV` results.
    Segv,
    /// `SEGV`s on a mapped page (the protection forbade the access).
    ProtFaults,
    /// `SIGBUS` results.
    Sigbus,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 22] = [
        Kind::Scripts,
        Kind::Ops,
        Kind::MapsLines,
        Kind::MaxMapsEntries,
        Kind::Merges,
        Kind::Splits,
        Kind::Grows,
        Kind::Shrinks,
        Kind::Moves,
        Kind::MultiMoves,
        Kind::MovesOverMappings,
        Kind::Duplications,
        Kind::CowBreaks,
        Kind::CowIsolated,
        Kind::SharedVisible,
        Kind::ZeroFillReads,
        Kind::FileReads,
        Kind::DontneedDropped,
        Kind::DontneedKept,
        Kind::Segv,
        Kind::ProtFaults,
        Kind::Sigbus,
    ];

    /// The kind's name in the coverage table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Scripts => "scripts",
            Kind::Ops => "ops",
            Kind::MapsLines => "maps lines",
            Kind::MaxMapsEntries => "max maps entries",
            Kind::Merges => "merges",
            Kind::Splits => "splits",
            Kind::Grows => "mremap grows",
            Kind::Shrinks => "mremap shrinks",
            Kind::Moves => "mremap moves",
            Kind::MultiMoves => "multi-mapping moves",
            Kind::MovesOverMappings => "moves over mappings",
            Kind::Duplications => "mremap duplications",
            Kind::CowBreaks => "copy-on-write breaks",
            Kind::CowIsolated => "copy-on-write isolation",
            Kind::SharedVisible => "shared visibility",
            Kind::ZeroFillReads => "zero-fill reads",
            Kind::FileReads => "file reads",
            Kind::DontneedDropped => "dontneed dropped",
            Kind::DontneedKept => "dontneed kept",
            Kind::Segv => "SEGV",
            Kind::ProtFaults => "protection faults",
            Kind::Sigbus => "SIGBUS",
        }
    }
}

/// Counts of each [`Kind`] and of each `err NAME`, summed with [`add`](Self::add).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    counts: BTreeMap<Kind, u64>,
    errors: BTreeMap<String, u64>,
    /// Per rule cell and result line (`ok`, `err EFAULT`, `= V` for any
    /// value read, `seen` for a `maps` fact).
    cells: BTreeMap<(Cell, String), u64>,
}

impl Coverage {
    /// The count of `kind`.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// How many `err NAME` lines there were for errno `name` (`"EINVAL"`).
    pub fn errors(&self, name: &str) -> u64 {
        self.errors.get(name).copied().unwrap_or(0)
    }

    /// Every errno name seen, with its count, by name.
    pub fn error_names(&self) -> impl Iterator<Item = (&str, u64)> {
        self.errors
            .iter()
            .map(|(name, &count)| (name.as_str(), count))
    }

    /// How often `cell` was exercised: with the result line `outcome`, or
    /// with any result.
    pub fn cell(&self, cell: Cell, outcome: Option<&str>) -> u64 {
        self.cells
            .iter()
            .filter(|((c, o), _)| *c == cell && outcome.is_none_or(|wanted| wanted == o))
            .map(|(_, &count)| count)
            .sum()
    }

    /// The results seen in `cell`, with their counts, by result.
    pub fn cell_outcomes(&self, cell: Cell) -> impl Iterator<Item = (&str, u64)> {
        self.cells
            .iter()
            .filter(move |((c, _), _)| *c == cell)
            .map(|((_, outcome), &count)| (outcome.as_str(), count))
    }

    fn bump_cell(&mut self, cell: Cell, line: &str) {
        let outcome = match line {
            _ if line.starts_with("= ") => "= V",
            _ if line.starts_with("maps") => "seen",
            _ => line,
        };
        *self.cells.entry((cell, outcome.to_owned())).or_default() += 1;
    }

    /// Adds `other`'s counts (the maximum for [`Kind::MaxMapsEntries`]).
    pub fn add(&mut self, other: &Coverage) {
        for (&kind, &count) in &other.counts {
            if kind == Kind::MaxMapsEntries {
                let max = self.count(kind).max(count);
                self.counts.insert(kind, max);
            } else {
                self.bump(kind, count);
            }
        }
        for (name, &count) in &other.errors {
            *self.errors.entry(name.clone()).or_default() += count;
        }
        for (key, &count) in &other.cells {
            *self.cells.entry(key.clone()).or_default() += count;
        }
    }

    fn bump(&mut self, kind: Kind, count: u64) {
        *self.counts.entry(kind).or_default() += count;
    }

    fn raise(&mut self, kind: Kind, value: u64) {
        let max = self.count(kind).max(value);
        self.counts.insert(kind, max);
    }
}

impl fmt::Display for Coverage {
    /// A two-column table: every kind, then every errno seen.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for kind in Kind::ALL {
            writeln!(f, "{:<26}{:>9}", kind.name(), self.count(kind))?;
        }
        for (name, count) in self.error_names() {
            writeln!(f, "{:<26}{:>9}", format!("err {name}"), count)?;
        }
        for ((cell, outcome), count) in &self.cells {
            writeln!(f, "{:<56}{:>9}", format!("{cell}: {outcome}"), count)?;
        }
        Ok(())
    }
}

/// Counts what `ops` exercised, from `output`, its result lines on the host
/// (one per op; extra ops or lines are ignored). See the module docs for
/// what each count means. Never panics.
pub fn classify<S: AsRef<str>>(ops: &[Op], output: &[S]) -> Coverage {
    let lines: Vec<&str> = output.iter().map(AsRef::as_ref).collect();
    let count = ops.len().min(lines.len());
    let (ops, lines) = (&ops[..count], &lines[..count]);
    let known = KnownStates::new(ops, lines);
    let mut classifier = Classifier::default();
    classifier.coverage.bump(Kind::Scripts, 1);
    for (index, (op, line)) in ops.iter().zip(lines).enumerate() {
        classifier.step(op, line, known.before(index));
    }
    classifier.coverage
}

/// One entry of a `maps` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) start: u64,
    pub(super) end: u64,
    /// `rw-p`: protection, then `p` or `s`.
    pub(super) perms: [u8; 4],
    pub(super) backing: Backing,
}

impl Entry {
    pub(super) fn holds(&self, page: u64) -> bool {
        self.start <= page && page < self.end
    }

    pub(super) fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }

    fn shared(&self) -> bool {
        self.perms[3] == b's'
    }

    /// The file and file page behind `page`, for a file mapping.
    pub(super) fn file_page(&self, page: u64) -> Option<(u8, u64)> {
        match self.backing {
            Backing::File { id, pgoff } => Some((id, pgoff + (page - self.start))),
            Backing::Anon => None,
        }
    }
}

/// Parses a `maps ...` result line; `None` if it is not one.
fn parse_maps(line: &str) -> Option<Vec<Entry>> {
    let mut words = line.split(' ');
    if words.next() != Some("maps") {
        return None;
    }
    words
        .filter(|word| !word.is_empty())
        .map(parse_entry)
        .collect()
}

/// `START-END:PERMS:anon` or `START-END:PERMS:file:ID:PGOFF`.
fn parse_entry(word: &str) -> Option<Entry> {
    let mut fields = word.splitn(3, ':');
    let (range, perms, backing) = (fields.next()?, fields.next()?, fields.next()?);
    let (start, end) = range.split_once('-')?;
    let perms: [u8; 4] = perms.as_bytes().try_into().ok()?;
    let backing = match backing.split_once(':') {
        None if backing == "anon" => Backing::Anon,
        Some(("file", rest)) => {
            let (id, pgoff) = rest.split_once(':')?;
            Backing::File {
                id: id.parse().ok()?,
                pgoff: pgoff.parse().ok()?,
            }
        }
        _ => return None,
    };
    Some(Entry {
        start: start.parse().ok()?,
        end: end.parse().ok()?,
        perms,
        backing,
    })
}

/// Whether `op` may change the mappings.
fn changes_layout(op: &Op) -> bool {
    matches!(
        op,
        Op::Mmap { .. } | Op::Munmap { .. } | Op::Mprotect { .. } | Op::Mremap { .. }
    )
}

/// For each op, the layout just before it, where a `maps` line shows it.
struct KnownStates {
    /// Per op: index into `layouts`.
    before: Vec<Option<usize>>,
    layouts: Vec<Vec<Entry>>,
}

impl KnownStates {
    /// Splits the script into stretches that end with a layout-changing op
    /// and gives each stretch the layout of its first `maps` line.
    fn new(ops: &[Op], lines: &[&str]) -> Self {
        let mut known = KnownStates {
            before: vec![None; ops.len()],
            layouts: Vec::new(),
        };
        let mut stretch_start = 0;
        let mut layout = None;
        for (index, op) in ops.iter().enumerate() {
            if *op == Op::Maps && layout.is_none() {
                if let Some(entries) = parse_maps(lines[index]) {
                    known.layouts.push(entries);
                    layout = Some(known.layouts.len() - 1);
                }
            }
            if changes_layout(op) || index + 1 == ops.len() {
                known.before[stretch_start..=index].fill(layout);
                stretch_start = index + 1;
                layout = None;
            }
        }
        known
    }

    fn before(&self, index: usize) -> Option<&[Entry]> {
        let layout = (*self.before.get(index)?)?;
        Some(&self.layouts[layout])
    }
}

/// The entry holding `page` in a known layout.
fn entry_at(layout: Option<&[Entry]>, page: u64) -> Option<Entry> {
    layout?.iter().find(|entry| entry.holds(page)).copied()
}

/// The last successful write to a page.
#[derive(Clone, Copy, Debug)]
struct Written {
    value: u8,
    /// The stretch it happened in.
    stretch: u64,
    /// Covered by a successful `madvise` since, in the same stretch.
    advised: bool,
    /// The file byte it replaced, if it was a copy-on-write of a private
    /// file page (and not yet read back).
    cow_of: Option<u8>,
}

/// The running state of [`classify`].
#[derive(Default)]
struct Classifier {
    coverage: Coverage,
    layout: Boundaries,
    /// Counts layout-changing ops: the current stretch.
    stretch: u64,
    written: HashMap<u64, Written>,
    /// Per file page: the last value written through a shared mapping, and
    /// the page written.
    shared_writes: HashMap<(u8, u64), (u8, u64)>,
    /// Per file page: the last value written through a private mapping, and
    /// the page written.
    private_writes: HashMap<(u8, u64), (u8, u64)>,
    /// Both sides of the script's fork.
    fork: ForkTracker,
}

impl Classifier {
    fn step(&mut self, op: &Op, line: &str, known: Option<&[Entry]>) {
        self.coverage.bump(Kind::Ops, 1);
        if let Some(name) = line.strip_prefix("err ") {
            *self.coverage.errors.entry(name.to_owned()).or_default() += 1;
        }
        for cell in cells_of(op, line, known) {
            self.coverage.bump_cell(cell, line);
        }
        for cell in self.fork.step(op, line) {
            self.coverage.bump_cell(cell, line);
        }
        let ok = line == "ok";
        match *op {
            Op::Maps => self.maps(line),
            Op::Write { page, value } => self.write(page, value, line, known),
            Op::Read { page } => self.read(page, line, known),
            Op::MadviseDontneed { page, npages } if ok => self.advised(page, page + npages),
            Op::MadviseDontneed { .. } => {}
            Op::Mremap {
                page,
                old_npages,
                new_npages,
                new_page,
            } => {
                if ok {
                    self.remapped(page, old_npages, new_npages, new_page, known);
                }
                self.layout.changed(op, ok, known);
            }
            _ => self.layout.changed(op, ok, known),
        }
        if changes_layout(op) {
            self.stretch += 1;
        }
    }

    fn maps(&mut self, line: &str) {
        let Some(entries) = parse_maps(line) else {
            return;
        };
        for cell in cells_of_maps(&entries) {
            self.coverage.bump_cell(cell, line);
        }
        let (merges, splits) = self.layout.observe(&entries);
        self.coverage.bump(Kind::Merges, merges);
        self.coverage.bump(Kind::Splits, splits);
        self.coverage.bump(Kind::MapsLines, 1);
        self.coverage
            .raise(Kind::MaxMapsEntries, entries.len() as u64);
    }

    /// Counts a successful `mremap`.
    fn remapped(
        &mut self,
        page: u64,
        old: u64,
        new: u64,
        target: Option<u64>,
        known: Option<&[Entry]>,
    ) {
        let Some(target) = target else {
            let kind = match new.cmp(&old) {
                std::cmp::Ordering::Greater => Kind::Grows,
                std::cmp::Ordering::Less => Kind::Shrinks,
                std::cmp::Ordering::Equal => return,
            };
            self.coverage.bump(kind, 1);
            return;
        };
        if old == 0 {
            self.coverage.bump(Kind::Duplications, 1);
            return;
        }
        self.coverage.bump(Kind::Moves, 1);
        let Some(layout) = known else { return };
        let source: Vec<&Entry> = layout
            .iter()
            .filter(|entry| entry.overlaps(page, page + old))
            .collect();
        let whole = source
            .first()
            .is_some_and(|entry| entry.holds(page) && entry.holds(page + old - 1));
        if !whole {
            self.coverage.bump(Kind::MultiMoves, 1);
        }
        if layout
            .iter()
            .any(|entry| entry.overlaps(target, target + new))
        {
            self.coverage.bump(Kind::MovesOverMappings, 1);
        }
    }

    fn write(&mut self, page: u64, value: u8, line: &str, known: Option<&[Entry]>) {
        if line != "ok" {
            self.fault(page, line, known);
            return;
        }
        let entry = entry_at(known, page);
        let mut cow_of = None;
        if let Some((entry, file_page)) = entry.and_then(|e| Some((e, e.file_page(page)?))) {
            let byte = file_byte(file_page.0, file_page.1);
            if entry.shared() {
                self.shared_writes.insert(file_page, (value, page));
                self.private_writes.remove(&file_page);
            } else {
                self.private_writes.insert(file_page, (value, page));
                cow_of = Some(byte).filter(|&byte| byte != value);
            }
        }
        let written = Written {
            value,
            stretch: self.stretch,
            advised: false,
            cow_of,
        };
        self.written.insert(page, written);
    }

    fn read(&mut self, page: u64, line: &str, known: Option<&[Entry]>) {
        let Some(value) = line.strip_prefix("= ").and_then(|v| v.parse::<u8>().ok()) else {
            self.fault(page, line, known);
            return;
        };
        if let Some(entry) = entry_at(known, page) {
            self.read_known(page, value, entry);
        }
        let Some(written) = self.written.get_mut(&page) else {
            return;
        };
        if written.stretch != self.stretch {
            return;
        }
        if written.advised {
            let kind = match value == written.value {
                true => Kind::DontneedKept,
                false => Kind::DontneedDropped,
            };
            self.coverage.bump(kind, 1);
        } else if written.cow_of.is_some() && value == written.value {
            written.cow_of = None;
            self.coverage.bump(Kind::CowBreaks, 1);
        }
    }

    /// Counts a read of `value` at `page`, which `entry` holds.
    fn read_known(&mut self, page: u64, value: u8, entry: Entry) {
        let Some(file_page) = entry.file_page(page) else {
            if value == 0 {
                self.coverage.bump(Kind::ZeroFillReads, 1);
            }
            return;
        };
        let original = file_byte(file_page.0, file_page.1);
        if value == original {
            self.coverage.bump(Kind::FileReads, 1);
        }
        if let Some(&(written, at)) = self.shared_writes.get(&file_page) {
            if at != page && value == written && written != original {
                self.coverage.bump(Kind::SharedVisible, 1);
            }
        }
        if let Some(&(written, at)) = self.private_writes.get(&file_page) {
            if at != page && value != written {
                self.coverage.bump(Kind::CowIsolated, 1);
            }
        }
    }

    /// Counts a `SEGV` or `SIGBUS`.
    fn fault(&mut self, page: u64, line: &str, known: Option<&[Entry]>) {
        match line {
            "SIGBUS" => self.coverage.bump(Kind::Sigbus, 1),
            "SEGV" => {
                self.coverage.bump(Kind::Segv, 1);
                if entry_at(known, page).is_some() {
                    self.coverage.bump(Kind::ProtFaults, 1);
                }
            }
            _ => {}
        }
    }

    /// Marks the written pages of `start..end` as covered by `madvise`.
    fn advised(&mut self, start: u64, end: u64) {
        for (&page, written) in &mut self.written {
            if start <= page && page < end && written.stretch == self.stretch {
                written.advised = true;
            }
        }
    }
}

/// The bookkeeping behind merges and splits (see the module docs).
#[derive(Default)]
struct Boundaries {
    /// Known boundaries since the last `maps` line.
    edges: BTreeSet<u64>,
    /// Ranges known to have been one mapping since the last `maps` line: its
    /// entries (the window starts empty) and the successful `mmap`s since.
    spans: Vec<Span>,
    /// Ranges mapped, unmapped or moved since the last `maps` line, in order.
    replaced: Vec<(u64, u64)>,
}

/// A range known to have been one mapping, from the time `replaced` had
/// `since` elements.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    end: u64,
    since: usize,
}

impl Boundaries {
    /// Takes in a `maps` line: returns (merges, splits) since the last one.
    fn observe(&mut self, entries: &[Entry]) -> (u64, u64) {
        let inside = |entries: &[Entry], point: u64| {
            entries
                .iter()
                .any(|entry| entry.start < point && point < entry.end)
        };
        let merges = self
            .edges
            .iter()
            .filter(|&&edge| inside(entries, edge))
            .count();
        let edges: BTreeSet<u64> = entries
            .iter()
            .flat_map(|entry| [entry.start, entry.end])
            .collect();
        let splits = edges.iter().filter(|&&edge| self.was_cut(edge)).count();
        self.edges = edges;
        self.spans = entries
            .iter()
            .map(|entry| Span {
                start: entry.start,
                end: entry.end,
                since: 0,
            })
            .collect();
        self.replaced.clear();
        (merges as u64, splits as u64)
    }

    /// Whether `point` lay strictly inside a known mapping that nothing has
    /// replaced around `point` since.
    fn was_cut(&self, point: u64) -> bool {
        self.spans.iter().any(|span| {
            span.start < point
                && point < span.end
                && !self.replaced[span.since..]
                    .iter()
                    .any(|&(start, end)| start < point && point < end)
        })
    }

    /// Takes in a layout-changing op and whether it succeeded.
    fn changed(&mut self, op: &Op, ok: bool, known: Option<&[Entry]>) {
        match *op {
            Op::Mmap { page, npages, .. } if npages > 0 => match ok {
                true => {
                    self.replace(page, page + npages);
                    self.spans.push(Span {
                        start: page,
                        end: page + npages,
                        since: self.replaced.len(),
                    });
                }
                false => self.forget(page, page + npages),
            },
            Op::Munmap { page, npages } if ok && npages > 0 => self.replace(page, page + npages),
            Op::Mprotect { page, npages, prot } if ok && npages > 0 => {
                self.protected(page, page + npages, prot, known);
            }
            Op::Mremap {
                page,
                old_npages,
                new_npages,
                new_page,
            } => match (new_page, ok) {
                (None, true) => self.resized(page, old_npages, new_npages),
                (Some(target), true) => self.moved(page, old_npages, new_npages, target),
                (Some(target), false) => self.forget(target, target + new_npages),
                (None, false) => {}
            },
            _ => {}
        }
    }

    /// `start..end` now holds one new mapping, or a hole.
    fn replace(&mut self, start: u64, end: u64) {
        self.forget(start, end);
        self.edges.insert(start);
        self.edges.insert(end);
    }

    /// Whatever was strictly inside `start..end` may have been replaced.
    fn forget(&mut self, start: u64, end: u64) {
        if end <= start + 1 {
            return;
        }
        let inner: Vec<u64> = self.edges.range(start + 1..end).copied().collect();
        for edge in inner {
            self.edges.remove(&edge);
        }
        self.replaced.push((start, end));
    }

    /// A successful `mprotect`: each end of the range is a boundary if the
    /// known mapping on its inside had another protection.
    fn protected(&mut self, start: u64, end: u64, prot: Prot, known: Option<&[Entry]>) {
        let wanted = prot.to_string();
        for (edge, inside) in [(start, start), (end, end - 1)] {
            let Some(entry) = entry_at(known, inside) else {
                continue;
            };
            if entry.perms[..3] != *wanted.as_bytes() {
                self.edges.insert(edge);
            }
        }
    }

    /// A successful in-place `mremap`.
    fn resized(&mut self, page: u64, old: u64, new: u64) {
        if new > old && old > 0 {
            // The grown part was a hole; its old end is now inside.
            self.forget(page + old - 1, page + new);
            self.edges.insert(page + new);
        } else if new < old {
            self.replace(page + new, page + old);
        }
    }

    /// A successful moving `mremap`: the boundaries inside the source move
    /// along, the source becomes a hole, the target a mapping.
    fn moved(&mut self, page: u64, old: u64, new: u64, target: u64) {
        let carried: Vec<u64> = match old {
            0 => Vec::new(),
            _ => self.edges.range(page + 1..page + old).copied().collect(),
        };
        if old > 0 {
            self.replace(page, page + old);
        }
        self.replace(target, target + new);
        for edge in carried {
            let moved = target + (edge - page);
            if moved < target + new {
                self.edges.insert(moved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse;

    fn classify_text(script: &str, output: &str) -> Coverage {
        let ops = parse(script).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(ops.len(), lines.len(), "test data");
        classify(&ops, &lines)
    }

    #[test]
    fn spec_example_has_two_splits_and_two_merges() {
        let script = "mmap 0 16 rw- anon private\nwrite 3 7\nread 3\nread 20\n\
                      mprotect 4 2 r--\nmaps\nwrite 4 1\nmprotect 4 2 rw-\nmaps\n";
        let output = "ok\nok\n= 7\nSEGV\nok\nmaps 0-4:rw-p:anon 4-6:r--p:anon 6-16:rw-p:anon\n\
                      SEGV\nok\nmaps 0-16:rw-p:anon\n";
        let coverage = classify_text(script, output);
        assert_eq!(coverage.count(Kind::Splits), 2);
        assert_eq!(coverage.count(Kind::Merges), 2);
        assert_eq!(coverage.count(Kind::Segv), 2);
        assert_eq!(coverage.count(Kind::ProtFaults), 1);
        assert_eq!(coverage.count(Kind::MaxMapsEntries), 3);
    }

    #[test]
    fn replacing_is_neither_a_split_nor_a_merge() {
        let script = "mmap 0 8 rw- anon private\nmaps\nmunmap 0 8\nmmap 0 4 r-- anon private\n\
                      mmap 4 4 rw- anon private\nmaps\nmmap 0 8 rw- anon private\nmaps\n";
        let output = "ok\nmaps 0-8:rw-p:anon\nok\nok\nok\nmaps 0-4:r--p:anon 4-8:rw-p:anon\n\
                      ok\nmaps 0-8:rw-p:anon\n";
        let coverage = classify_text(script, output);
        assert_eq!(coverage.count(Kind::Splits), 0);
        assert_eq!(coverage.count(Kind::Merges), 0);
    }

    #[test]
    fn a_same_protection_mprotect_is_not_a_merge() {
        let script = "mmap 0 8 rw- anon private\nmaps\nmprotect 2 2 rw-\nmaps\n";
        let output = "ok\nmaps 0-8:rw-p:anon\nok\nmaps 0-8:rw-p:anon\n";
        let coverage = classify_text(script, output);
        assert_eq!(coverage.count(Kind::Merges), 0);
        assert_eq!(coverage.count(Kind::Splits), 0);
    }

    #[test]
    fn adjacent_mmaps_merge() {
        let script = "mmap 0 4 rw- anon private\nmmap 4 4 rw- anon private\nmaps\n";
        let output = "ok\nok\nmaps 0-8:rw-p:anon\n";
        assert_eq!(classify_text(script, output).count(Kind::Merges), 1);
    }

    #[test]
    fn moves_and_their_kinds() {
        let script =
            "mmap 0 4 rw- anon private\nmmap 6 2 r-- anon private\nmmap 20 2 rw- anon shared\n\
                      maps\nmremap 0 8 8 20\nmremap 20 0 2 40\nmremap 20 4 6\nmaps\n";
        let output = "ok\nok\nok\nmaps 0-4:rw-p:anon 6-8:r--p:anon 20-22:rw-s:anon\n\
                      ok\nok\nok\nmaps 20-26:rw-p:anon 26-28:r--p:anon 40-42:rw-s:anon\n";
        let coverage = classify_text(script, output);
        assert_eq!(coverage.count(Kind::Moves), 1);
        assert_eq!(coverage.count(Kind::MultiMoves), 1);
        assert_eq!(coverage.count(Kind::MovesOverMappings), 1);
        assert_eq!(coverage.count(Kind::Duplications), 1);
        assert_eq!(coverage.count(Kind::Grows), 1);
    }

    #[test]
    fn memory_effects() {
        let script = "mmap 0 2 rw- file:1:0 private\nmmap 2 2 rw- file:1:0 shared\n\
                      mmap 4 2 rw- anon private\nmaps\n\
                      write 0 200\nread 0\nread 2\nwrite 3 9\nread 1\nread 4\n\
                      write 5 7\nmadvise 4 2 dontneed\nread 5\nread 9\n";
        let output = "ok\nok\nok\nmaps 0-2:rw-p:file:1:0 2-4:rw-s:file:1:0 4-6:rw-p:anon\n\
                      ok\n= 200\n= 37\nok\n= 9\n= 0\nok\nok\n= 0\nSEGV\n";
        let coverage = classify_text(script, output);
        assert_eq!(coverage.count(Kind::CowBreaks), 1);
        assert_eq!(coverage.count(Kind::CowIsolated), 1);
        assert_eq!(coverage.count(Kind::SharedVisible), 1);
        assert_eq!(coverage.count(Kind::FileReads), 1);
        assert_eq!(coverage.count(Kind::ZeroFillReads), 2);
        assert_eq!(coverage.count(Kind::DontneedDropped), 1);
        assert_eq!(coverage.count(Kind::Segv), 1);
        assert_eq!(coverage.count(Kind::ProtFaults), 0);
    }

    #[test]
    fn errors_are_counted_by_name_and_sums_add_up() {
        let script = "munmap 0 0\nmprotect 5 1 r--\nmunmap 0 0\n";
        let output = "err EINVAL\nerr ENOMEM\nerr EINVAL\n";
        let one = classify_text(script, output);
        assert_eq!(one.errors("EINVAL"), 2);
        let mut sum = one.clone();
        sum.add(&one);
        assert_eq!(sum.errors("ENOMEM"), 2);
        assert_eq!(sum.count(Kind::Scripts), 2);
        assert!(sum.to_string().contains("err EINVAL"));
    }

    #[test]
    fn garbage_output_does_not_panic() {
        let ops = parse("maps\nread 3\nwrite 3 1\nmremap 0 0 1 5\n").unwrap();
        for output in [
            vec!["maps 1-:x:anon", "= 999", "what", "ok"],
            vec!["maps 5-2:rw-p:file:1", "SEGV", "SIGBUS", "err"],
            vec![],
        ] {
            classify(&ops, &output);
        }
    }
}
