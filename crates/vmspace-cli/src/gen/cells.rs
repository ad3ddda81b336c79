//! The rule cells of the coverage table: one [`Cell`] per case that Linux's
//! rules tell apart, so that coverage is measured rule by rule rather than
//! by counting operations. Each cell is counted with the call's result line
//! (`ok`, `err EFAULT`), so the table shows both sides of a rule.
//!
//! * **`mremap`**: each row of the behaviour matrix at the top of
//!   `crates/vmspace/src/remap.rs` that vmscript can express ([`RemapRow`])
//!   times the shape of the old range in the known layout ([`Shape`]: one
//!   VMA, several VMAs, a hole inside, a hole first). The matrix row "grow
//!   otherwise, `MREMAP_MAYMOVE`" (a move to a placed address) has no cell:
//!   vmscript's 3-argument form passes no flags and its 4-argument form is
//!   always `MAYMOVE | FIXED`. A cell is counted only where a `maps` line
//!   gives the layout just before the call.
//! * **Errors by call** ([`Cell::Error`]): every `err NAME` of each call.
//! * **Check order** ([`Precedence`]): calls that break two rules at once,
//!   whose result says which rule Linux checks first.
//! * **Execute-only protection keys** ([`ExecOnly`]): `--x` mappings (on a
//!   CPU with PKU Linux gives them a key of their own, a VMA attribute).
//! * **Fork** ([`ForkCase`]): writes after the fork on each side,
//!   copy-on-write of a page shared with the child, `munmap` on one side,
//!   shared mappings across the fork (judged by `gen/fork.rs`'s tracker).
//! * **Advices** ([`Cell::Advice`]): each `madvise` advice besides
//!   `dontneed`, by result.
//! * **Limits** ([`Limit`]): the largest file offset of a regular file. The
//!   address limit and `vm.max_map_count` lie outside what a vmscript can
//!   reach (the window; the host's limit is global), so
//!   `tests/host_limits.rs` checks them through the library's API instead.

use std::fmt;

use super::coverage::Entry;
use crate::script::{Advice, Backing, Op, Prot};

/// The file page limit of a regular file: a mapping's last page must be
/// below it (`MAX_LFS_FILESIZE` is `2^63 - 1` bytes).
pub const FILE_PAGE_LIMIT: u64 = (1 << 51) - 1;

/// One case of Linux's rules; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    /// An `mremap` of one matrix row on an old range of one shape.
    Remap(RemapRow, Shape),
    /// An error returned by a call.
    Error(Call),
    /// A call that breaks two rules.
    First(Precedence),
    /// Execute-only memory.
    ExecOnly(ExecOnly),
    /// A limit of the address space.
    Limit(Limit),
    /// Both sides of a fork.
    Fork(ForkCase),
    /// An `madvise` with an advice besides `dontneed`.
    Advice(Advice),
}

/// What a script did across its `fork`, as its host output shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ForkCase {
    /// A successful write in the parent after the fork.
    WriteInParent,
    /// A successful write in the child.
    WriteInChild,
    /// A read of a page written before the fork that does not show what
    /// the other side wrote to it since (copy-on-write).
    CowOfShared,
    /// A read on one side of a page the other side unmapped since the fork
    /// that still returns data.
    MunmapOneSide,
    /// A read on one side that returns what the other side wrote after the
    /// fork (a shared mapping).
    SharedAcross,
}

impl ForkCase {
    /// Every case.
    pub const ALL: [ForkCase; 5] = [
        ForkCase::WriteInParent,
        ForkCase::WriteInChild,
        ForkCase::CowOfShared,
        ForkCase::MunmapOneSide,
        ForkCase::SharedAcross,
    ];

    fn name(self) -> &'static str {
        match self {
            ForkCase::WriteInParent => "write in the parent",
            ForkCase::WriteInChild => "write in the child",
            ForkCase::CowOfShared => "COW of a page shared with the child",
            ForkCase::MunmapOneSide => "munmap in one side",
            ForkCase::SharedAcross => "shared mapping across fork",
        }
    }
}

/// The rows of `remap.rs`'s behaviour matrix that vmscript expresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemapRow {
    /// 3 arguments, `new < old`: the tail is unmapped.
    Shrink,
    /// 3 arguments, `new == old`: nothing happens.
    Same,
    /// 3 arguments, `new > old`: grows in place or fails.
    Grow,
    /// 3 arguments, `old == 0`: a duplicate needs `MAYMOVE`.
    OldZero,
    /// `MAYMOVE | FIXED`, `new == old`: every VMA moves, gaps kept.
    FixedSame,
    /// `MAYMOVE | FIXED`, `new < old`: the tail is unmapped, the rest moves.
    FixedShrink,
    /// `MAYMOVE | FIXED`, `new > old`: the range moves and grows.
    FixedGrow,
    /// `MAYMOVE | FIXED`, `old == 0`: a duplicate of shared memory.
    Duplicate,
}

impl RemapRow {
    /// Every row, in table order.
    pub const ALL: [RemapRow; 8] = [
        RemapRow::Shrink,
        RemapRow::Same,
        RemapRow::Grow,
        RemapRow::OldZero,
        RemapRow::FixedSame,
        RemapRow::FixedShrink,
        RemapRow::FixedGrow,
        RemapRow::Duplicate,
    ];

    /// The row of `mremap PAGE OLD NEW [NEW_PAGE]`.
    pub fn of(old: u64, new: u64, fixed: bool) -> RemapRow {
        use std::cmp::Ordering::*;
        match (fixed, old, new.cmp(&old)) {
            (false, 0, _) => RemapRow::OldZero,
            (false, _, Less) => RemapRow::Shrink,
            (false, _, Equal) => RemapRow::Same,
            (false, _, Greater) => RemapRow::Grow,
            (true, 0, _) => RemapRow::Duplicate,
            (true, _, Less) => RemapRow::FixedShrink,
            (true, _, Equal) => RemapRow::FixedSame,
            (true, _, Greater) => RemapRow::FixedGrow,
        }
    }

    /// The shapes an old range of this row can have (an empty range is in
    /// one VMA or in a hole).
    pub fn shapes(self) -> &'static [Shape] {
        match self {
            RemapRow::OldZero | RemapRow::Duplicate => &[Shape::OneVma, Shape::HoleFirst],
            _ => &Shape::ALL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RemapRow::Shrink => "shrink",
            RemapRow::Same => "same size",
            RemapRow::Grow => "grow",
            RemapRow::OldZero => "old 0",
            RemapRow::FixedSame => "fixed same size",
            RemapRow::FixedShrink => "fixed shrink",
            RemapRow::FixedGrow => "fixed grow",
            RemapRow::Duplicate => "fixed old 0",
        }
    }
}

/// What the old range of an `mremap` held, in the known layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    /// Inside one VMA.
    OneVma,
    /// Covered by several VMAs, without a gap.
    SeveralVmas,
    /// Starts in a VMA and has an unmapped page.
    HoleInside,
    /// Its first page is unmapped.
    HoleFirst,
}

impl Shape {
    /// Every shape, in table order.
    pub const ALL: [Shape; 4] = [
        Shape::OneVma,
        Shape::SeveralVmas,
        Shape::HoleInside,
        Shape::HoleFirst,
    ];

    /// The shape of `start .. start + len` in `layout` (sorted entries).
    pub(super) fn of(layout: &[Entry], start: u64, len: u64) -> Shape {
        let Some(first) = layout.iter().find(|entry| entry.holds(start)) else {
            return Shape::HoleFirst;
        };
        let end = start + len;
        if end <= first.end {
            return Shape::OneVma;
        }
        let mut covered = first.end;
        for entry in layout.iter().filter(|entry| entry.start >= first.end) {
            if entry.start != covered {
                return Shape::HoleInside;
            }
            covered = entry.end;
            if covered >= end {
                return Shape::SeveralVmas;
            }
        }
        Shape::HoleInside
    }

    fn name(self) -> &'static str {
        match self {
            Shape::OneVma => "one VMA",
            Shape::SeveralVmas => "several VMAs",
            Shape::HoleInside => "hole inside",
            Shape::HoleFirst => "hole first",
        }
    }
}

/// The calls, for [`Cell::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    /// `mmap`.
    Mmap,
    /// `munmap`.
    Munmap,
    /// `mprotect`.
    Mprotect,
    /// `mremap`.
    Mremap,
    /// `madvise`.
    Madvise,
    /// `mlock` and `munlock`.
    Mlock,
}

impl Call {
    fn of(op: &Op) -> Option<Call> {
        Some(match op {
            Op::Mmap { .. } => Call::Mmap,
            Op::Munmap { .. } => Call::Munmap,
            Op::Mprotect { .. } => Call::Mprotect,
            Op::Mremap { .. } => Call::Mremap,
            Op::MadviseDontneed { .. } | Op::Madvise { .. } => Call::Madvise,
            Op::Mlock { .. } | Op::Munlock { .. } => Call::Mlock,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Call::Mmap => "mmap",
            Call::Munmap => "munmap",
            Call::Mprotect => "mprotect",
            Call::Mremap => "mremap",
            Call::Madvise => "madvise",
            Call::Mlock => "mlock",
        }
    }
}

/// Calls that break two rules; the result shows which one Linux checks first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precedence {
    /// A fixed move whose ranges overlap, from a hole: the overlap
    /// (`EINVAL`) is checked before the VMA is looked up (`EFAULT`).
    OverlapBeforeLookup,
    /// `mremap` to length 0 from a hole: `EINVAL` before `EFAULT`.
    ZeroLengthBeforeLookup,
    /// A zero-length `mmap` from the last file page allowed (any page
    /// would pass the limit): `EINVAL` before `EOVERFLOW`.
    ZeroLengthBeforeOffset,
    /// A fixed shrink whose moved part leaves its VMA, over a mapping: the
    /// one-VMA check (`EFAULT`) comes before the destination is unmapped.
    OneVmaBeforeUnmap,
}

impl Precedence {
    /// Every case.
    pub const ALL: [Precedence; 4] = [
        Precedence::OverlapBeforeLookup,
        Precedence::ZeroLengthBeforeLookup,
        Precedence::ZeroLengthBeforeOffset,
        Precedence::OneVmaBeforeUnmap,
    ];

    fn name(self) -> &'static str {
        match self {
            Precedence::OverlapBeforeLookup => "mremap overlap, hole first",
            Precedence::ZeroLengthBeforeLookup => "mremap to 0, hole first",
            Precedence::ZeroLengthBeforeOffset => "mmap 0 pages past offset limit",
            Precedence::OneVmaBeforeUnmap => "fixed shrink leaving VMA, over map",
        }
    }
}

/// Execute-only memory (`--x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExecOnly {
    /// An `mmap` or `mprotect` to `--x`.
    Made,
    /// An `mprotect` of `--x` memory to another protection.
    Unmade,
    /// A `read` of a known `--x` page (`SEGV` with protection keys).
    Read,
    /// Two adjacent anonymous `--x` entries in a `maps` line (kept apart).
    Apart,
}

impl ExecOnly {
    /// Every case.
    pub const ALL: [ExecOnly; 4] = [
        ExecOnly::Made,
        ExecOnly::Unmade,
        ExecOnly::Read,
        ExecOnly::Apart,
    ];

    fn name(self) -> &'static str {
        match self {
            ExecOnly::Made => "made --x",
            ExecOnly::Unmade => "--x made other",
            ExecOnly::Read => "read of --x",
            ExecOnly::Apart => "adjacent --x kept apart",
        }
    }
}

/// Limits of the address space that a vmscript reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// A file `mmap` whose last page is the last one allowed.
    FileOffsetAt,
    /// A file `mmap` that passes the last page allowed.
    FileOffsetPast,
    /// An `mremap` growing a known file mapping past the last page allowed.
    FileOffsetGrowPast,
}

impl Limit {
    /// Every case.
    pub const ALL: [Limit; 3] = [
        Limit::FileOffsetAt,
        Limit::FileOffsetPast,
        Limit::FileOffsetGrowPast,
    ];

    fn name(self) -> &'static str {
        match self {
            Limit::FileOffsetAt => "file offset at the limit",
            Limit::FileOffsetPast => "file offset past the limit",
            Limit::FileOffsetGrowPast => "mremap grow past file limit",
        }
    }
}

impl fmt::Display for Cell {
    /// The cell's name in the coverage table: `mremap fixed shrink / hole first`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Remap(row, shape) => write!(f, "mremap {} / {}", row.name(), shape.name()),
            Cell::Error(call) => write!(f, "{} errors", call.name()),
            Cell::First(case) => write!(f, "order: {}", case.name()),
            Cell::ExecOnly(case) => write!(f, "exec-only: {}", case.name()),
            Cell::Limit(case) => write!(f, "limit: {}", case.name()),
            Cell::Fork(case) => write!(f, "fork: {}", case.name()),
            Cell::Advice(advice) => write!(f, "madvise {}", advice.name()),
        }
    }
}

/// The cells one op falls in, given its result `line` and the layout just
/// before it (`None` where no `maps` line shows it).
pub(super) fn cells_of(op: &Op, line: &str, known: Option<&[Entry]>) -> Vec<Cell> {
    let mut cells = Vec::new();
    if line.starts_with("err ") {
        cells.extend(Call::of(op).map(Cell::Error));
    }
    match *op {
        Op::Mremap {
            page,
            old_npages,
            new_npages,
            new_page,
        } => {
            let row = RemapRow::of(old_npages, new_npages, new_page.is_some());
            if let Some(layout) = known {
                let shape = Shape::of(layout, page, old_npages);
                cells.push(Cell::Remap(row, shape));
                cells.extend(remap_precedence(layout, op, shape));
                cells.extend(grow_past_file_limit(layout, op));
            }
            let hole_first = known.map(|layout| Shape::of(layout, page, 1) == Shape::HoleFirst);
            if new_npages == 0 && hole_first == Some(true) {
                cells.push(Cell::First(Precedence::ZeroLengthBeforeLookup));
            }
        }
        Op::Mmap {
            npages,
            prot,
            backing,
            ..
        } => {
            if is_exec_only(prot) {
                cells.push(Cell::ExecOnly(ExecOnly::Made));
            }
            if let Backing::File { pgoff, .. } = backing {
                cells.extend(file_limit(pgoff, npages));
            }
        }
        Op::Mprotect { page, prot, .. } => {
            if is_exec_only(prot) {
                cells.push(Cell::ExecOnly(ExecOnly::Made));
            } else if exec_only_at(known, page) {
                cells.push(Cell::ExecOnly(ExecOnly::Unmade));
            }
        }
        Op::Read { page } if exec_only_at(known, page) => {
            cells.push(Cell::ExecOnly(ExecOnly::Read));
        }
        Op::Madvise { advice, .. } => cells.push(Cell::Advice(advice)),
        _ => {}
    }
    cells
}

/// The cells of a `maps` line: adjacent anonymous `--x` entries, one per pair.
pub(super) fn cells_of_maps(entries: &[Entry]) -> Vec<Cell> {
    let exec_anon = |entry: &Entry| &entry.perms[..3] == b"--x" && entry.backing == Backing::Anon;
    entries
        .windows(2)
        .filter(|pair| pair[0].end == pair[1].start && exec_anon(&pair[0]) && exec_anon(&pair[1]))
        .map(|_| Cell::ExecOnly(ExecOnly::Apart))
        .collect()
}

/// Whether the known layout maps `page` execute-only.
fn exec_only_at(known: Option<&[Entry]>, page: u64) -> bool {
    known
        .and_then(|layout| layout.iter().find(|entry| entry.holds(page)))
        .is_some_and(|entry| &entry.perms[..3] == b"--x")
}

fn is_exec_only(prot: Prot) -> bool {
    prot.exec && !prot.read && !prot.write
}

/// The limit cell of a file `mmap` of `npages` from `pgoff`, if it lies at
/// or past the limit.
fn file_limit(pgoff: u64, npages: u64) -> Option<Cell> {
    let end = pgoff.checked_add(npages)?;
    match npages {
        0 if pgoff >= FILE_PAGE_LIMIT => Some(Cell::First(Precedence::ZeroLengthBeforeOffset)),
        0 => None,
        _ if end == FILE_PAGE_LIMIT => Some(Cell::Limit(Limit::FileOffsetAt)),
        _ if end > FILE_PAGE_LIMIT => Some(Cell::Limit(Limit::FileOffsetPast)),
        _ => None,
    }
}

/// The check-order cells of an `mremap` whose old range has `shape`.
fn remap_precedence(layout: &[Entry], op: &Op, shape: Shape) -> Option<Cell> {
    let Op::Mremap {
        page,
        old_npages,
        new_npages,
        new_page: Some(target),
    } = *op
    else {
        return None;
    };
    let overlaps = page < target + new_npages && target < page + old_npages;
    if overlaps && shape == Shape::HoleFirst {
        return Some(Cell::First(Precedence::OverlapBeforeLookup));
    }
    let shrinks = new_npages > 0 && new_npages < old_npages;
    let leaves = shrinks && Shape::of(layout, page, new_npages) != Shape::OneVma;
    let over_mapping = layout
        .iter()
        .any(|entry| entry.overlaps(target, target + new_npages));
    (leaves && over_mapping && !overlaps).then_some(Cell::First(Precedence::OneVmaBeforeUnmap))
}

/// The limit cell of an `mremap` that grows a known file mapping past the
/// file page limit.
fn grow_past_file_limit(layout: &[Entry], op: &Op) -> Option<Cell> {
    let Op::Mremap {
        page,
        old_npages,
        new_npages,
        ..
    } = *op
    else {
        return None;
    };
    let entry = layout.iter().find(|entry| entry.holds(page))?;
    let (_, file_page) = entry.file_page(page)?;
    let past = new_npages > old_npages && file_page.checked_add(new_npages)? > FILE_PAGE_LIMIT;
    past.then_some(Cell::Limit(Limit::FileOffsetGrowPast))
}

/// Every cell, in table order.
pub fn all_cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for row in RemapRow::ALL {
        for &shape in row.shapes() {
            cells.push(Cell::Remap(row, shape));
        }
    }
    for call in [
        Call::Mmap,
        Call::Munmap,
        Call::Mprotect,
        Call::Mremap,
        Call::Madvise,
        Call::Mlock,
    ] {
        cells.push(Cell::Error(call));
    }
    cells.extend(Precedence::ALL.map(Cell::First));
    cells.extend(ExecOnly::ALL.map(Cell::ExecOnly));
    cells.extend(Limit::ALL.map(Cell::Limit));
    cells.extend(ForkCase::ALL.map(Cell::Fork));
    cells.extend(Advice::ALL.map(Cell::Advice));
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, end: u64) -> Entry {
        Entry {
            start,
            end,
            perms: *b"rw-p",
            backing: Backing::Anon,
        }
    }

    #[test]
    fn shapes() {
        let layout = [entry(0, 4), entry(4, 8), entry(10, 12)];
        assert_eq!(Shape::of(&layout, 0, 4), Shape::OneVma);
        assert_eq!(Shape::of(&layout, 1, 2), Shape::OneVma);
        assert_eq!(Shape::of(&layout, 0, 8), Shape::SeveralVmas);
        assert_eq!(Shape::of(&layout, 2, 4), Shape::SeveralVmas);
        assert_eq!(Shape::of(&layout, 0, 10), Shape::HoleInside);
        assert_eq!(Shape::of(&layout, 4, 8), Shape::HoleInside);
        assert_eq!(Shape::of(&layout, 10, 4), Shape::HoleInside);
        assert_eq!(Shape::of(&layout, 8, 4), Shape::HoleFirst);
        assert_eq!(Shape::of(&layout, 0, 0), Shape::OneVma);
        assert_eq!(Shape::of(&[], 0, 0), Shape::HoleFirst);
    }

    #[test]
    fn rows() {
        assert_eq!(RemapRow::of(4, 2, true), RemapRow::FixedShrink);
        assert_eq!(RemapRow::of(4, 4, false), RemapRow::Same);
        assert_eq!(RemapRow::of(0, 4, true), RemapRow::Duplicate);
        assert_eq!(RemapRow::of(0, 4, false), RemapRow::OldZero);
        assert_eq!(RemapRow::of(2, 4, false), RemapRow::Grow);
    }

    #[test]
    fn file_limits() {
        assert_eq!(
            file_limit(FILE_PAGE_LIMIT - 1, 1),
            Some(Cell::Limit(Limit::FileOffsetAt))
        );
        assert_eq!(
            file_limit(FILE_PAGE_LIMIT, 1),
            Some(Cell::Limit(Limit::FileOffsetPast))
        );
        assert_eq!(
            file_limit(FILE_PAGE_LIMIT, 0),
            Some(Cell::First(Precedence::ZeroLengthBeforeOffset))
        );
        assert_eq!(file_limit(3, 4), None);
    }

    #[test]
    fn every_cell_is_listed_once() {
        let cells = all_cells();
        let mut sorted = cells.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), cells.len());
        assert_eq!(cells.len(), 6 * 4 + 2 * 2 + 6 + 4 + 4 + 3 + 5 + 7);
    }
}
