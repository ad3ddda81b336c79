//! Scenarios aimed at the rule cells (module `cells`) that random steps
//! rarely reach: an `mremap` of a chosen matrix row on an old range of a
//! chosen shape, execute-only memory beside other memory, file offsets at
//! the limit, and calls that break two rules at once.
//!
//! Random steps draw the old range of a resizing move inside one mapping of
//! the shadow, and move ranges that span several mappings only at the same
//! length, so a row-by-shape cell such as "fixed shrink / several VMAs" is
//! left to chance. A scenario builds the layout its cell needs in a slot of
//! its own in the rule area, far from the small region, shows it with `maps`
//! (a cell is counted only where a `maps` line gives the layout just before
//! the call), makes the call, and reads back where the memory went. Which
//! cell it lands in is still judged from the host's output, so a scenario
//! that misses its aim costs coverage, not correctness.

use super::cells::{RemapRow, Shape, FILE_PAGE_LIMIT};
use super::{mmap, mremap, prot, Generator};
use crate::script::{Backing, Op, Prot, Sharing, MAX_PGOFF};

/// The first page of the rule area: above the small region, below the far
/// cluster.
const RULE_AREA: u64 = 16_384;
/// Pages per scenario: the layout at the start, destinations from page 24.
const SLOT: u64 = 64;
/// Slots in the rule area; a script reuses them only after this many.
const SLOTS: u64 = 64;
/// Where destinations start inside a slot (past the largest layout).
const DEST: u64 = 24;

impl Generator<'_> {
    /// One scenario in the next free slot of the rule area.
    pub(super) fn rule_scenario(&mut self) {
        let slot = RULE_AREA + SLOT * (self.rule_slots % SLOTS);
        self.rule_slots += 1;
        match self.rng.below(20) {
            0..=13 => self.remap_cell(slot),
            14..=15 => self.exec_only(slot),
            16..=17 => self.file_offset_limit(slot),
            _ => self.check_order(slot),
        }
    }

    /// An `mremap` of a random matrix row on a random shape of old range.
    fn remap_cell(&mut self, slot: u64) {
        let row = self.rng.pick(&RemapRow::ALL);
        let shape = self.rng.pick(row.shapes());
        let shared = matches!(row, RemapRow::OldZero | RemapRow::Duplicate) && self.rng.chance(60);
        let sharing = match shared {
            true => Sharing::Shared,
            false => Sharing::Private,
        };
        let (a, b, gap) = (
            self.rng.between(2, 5),
            self.rng.between(2, 5),
            self.rng.between(1, 2),
        );
        let (first, second) = self.two_prots();
        let rw = Prot::READ_WRITE;
        let span = match shape {
            Shape::OneVma => {
                self.push(mmap(slot, a + b, rw, Backing::Anon, sharing));
                a + b
            }
            Shape::SeveralVmas => {
                self.push(mmap(slot, a, first, Backing::Anon, sharing));
                self.push(mmap(slot + a, b, second, Backing::Anon, sharing));
                a + b
            }
            Shape::HoleInside => {
                self.push(mmap(slot, a, first, Backing::Anon, sharing));
                self.push(mmap(slot + a + gap, b, second, Backing::Anon, sharing));
                a + gap + b
            }
            Shape::HoleFirst => {
                self.push(mmap(slot + gap, a + b, rw, Backing::Anon, sharing));
                a + b + gap
            }
        };
        let value = self.rng.between(1, 255) as u8;
        self.push(Op::Write { page: slot, value });
        let old = match row {
            RemapRow::OldZero | RemapRow::Duplicate => 0,
            _ => self.old_length(shape, a, gap, span),
        };
        let new = self.new_length(row, old, a);
        let target = matches!(
            row,
            RemapRow::FixedSame | RemapRow::FixedShrink | RemapRow::FixedGrow | RemapRow::Duplicate
        )
        .then(|| slot + DEST + self.rng.below(16));
        if let Some(target) = target.filter(|_| self.rng.chance(30)) {
            let len = self.rng.between(1, 8);
            self.push(mmap(target, len, rw, Backing::Anon, Sharing::Shared));
        }
        self.push(Op::Maps);
        self.push(mremap(slot, old, new, target));
        self.push(Op::Read {
            page: target.unwrap_or(slot),
        });
        if self.rng.chance(40) {
            self.push(Op::Maps);
        }
    }

    /// Two different protections for two VMAs side by side (so they do not
    /// merge), the first writable.
    fn two_prots(&mut self) -> (Prot, Prot) {
        let first = prot(self.rng.pick(&["rw-", "rwx"]));
        let second = prot(self.rng.pick(&["r--", "rw-", "r-x", "---"]));
        match first == second {
            true => (first, Prot::READ),
            false => (first, second),
        }
    }

    /// An old length from the slot's start that gives the range `shape`
    /// (the layout is `a` pages, maybe a gap, then the rest, `span` in all).
    fn old_length(&mut self, shape: Shape, a: u64, gap: u64, span: u64) -> u64 {
        match shape {
            Shape::OneVma => self.rng.between(2, span),
            Shape::SeveralVmas => self.rng.between(a + 1, span),
            Shape::HoleInside => self.rng.between(a + 1, span),
            Shape::HoleFirst => self.rng.between(gap.max(2), span),
        }
    }

    /// The new length for `row`: a shrink keeps the first VMA's `a` pages or
    /// fewer half of the time (the part that moves lies in one VMA) and
    /// reaches past them otherwise.
    fn new_length(&mut self, row: RemapRow, old: u64, a: u64) -> u64 {
        match row {
            RemapRow::Shrink | RemapRow::FixedShrink => {
                let keep = a.min(old - 1);
                if self.rng.chance(50) || keep + 1 > old - 1 {
                    self.rng.between(1, keep)
                } else {
                    self.rng.between(keep + 1, old - 1)
                }
            }
            RemapRow::Same | RemapRow::FixedSame => old,
            RemapRow::Grow | RemapRow::FixedGrow => old + self.rng.between(1, 4),
            RemapRow::OldZero | RemapRow::Duplicate => self.rng.between(1, 4),
        }
    }

    /// Part of a written anonymous VMA made execute-only, a new `rwx`
    /// mapping beside it, maybe written, then made execute-only too (with
    /// protection keys, Linux keeps the two apart when each has its own
    /// anonymous object); or two fresh `--x` mappings side by side.
    fn exec_only(&mut self, slot: u64) {
        let exec = prot("--x");
        let rw = Prot::READ_WRITE;
        if self.rng.chance(20) {
            self.push(mmap(slot, 4, exec, Backing::Anon, Sharing::Private));
            self.push(mmap(slot + 4, 4, exec, Backing::Anon, Sharing::Private));
            self.push(Op::Maps);
            self.push(Op::Read { page: slot });
            return;
        }
        let part = if self.rng.chance(80) {
            exec
        } else {
            prot("r-x")
        };
        self.push(mmap(slot, 8, rw, Backing::Anon, Sharing::Private));
        let page = slot + self.rng.below(8);
        self.push(Op::Write { page, value: 1 });
        self.push(Op::Mprotect {
            page: slot + 4,
            npages: 4,
            prot: part,
        });
        self.push(mmap(
            slot + 8,
            4,
            prot("rwx"),
            Backing::Anon,
            Sharing::Private,
        ));
        if self.rng.chance(70) {
            self.push(Op::Write {
                page: slot + 8,
                value: 2,
            });
        }
        self.push(Op::Mprotect {
            page: slot + 8,
            npages: 4,
            prot: part,
        });
        self.push(Op::Maps);
        self.push(Op::Read { page: slot + 4 });
        if self.rng.chance(50) {
            self.push(Op::Mprotect {
                page: slot + 4,
                npages: 8,
                prot: prot("r-x"),
            });
            self.push(Op::Maps);
        }
    }

    /// A file mapping whose last page is at, or just past, the last page a
    /// regular file allows; then an `mremap` growing it past the limit.
    fn file_offset_limit(&mut self, slot: u64) {
        if self.files.is_empty() {
            return self.remap_cell(slot);
        }
        let id = self.rng.pick(&self.files.clone());
        let len = self.rng.between(1, 3);
        let past = self.rng.below(3);
        let pgoff = (FILE_PAGE_LIMIT - len + past).min(MAX_PGOFF);
        let backing = Backing::File { id, pgoff };
        let sharing = self.sharing();
        self.push(mmap(slot, len, Prot::READ, backing, sharing));
        self.push(Op::Maps);
        let grown = len + self.rng.between(1, 2);
        let target = self.rng.chance(40).then_some(slot + DEST);
        self.push(mremap(slot, len, grown, target));
        self.push(Op::Read {
            page: target.unwrap_or(slot),
        });
    }

    /// A call that breaks two rules at once (see `cells::Precedence`).
    fn check_order(&mut self, slot: u64) {
        let rw = Prot::READ_WRITE;
        match self.rng.below(4) {
            0 => {
                self.push(mmap(slot + 1, 4, rw, Backing::Anon, Sharing::Private));
                self.push(Op::Maps);
                self.push(mremap(slot, 4, 4, Some(slot + 2)));
            }
            1 => {
                self.push(Op::Maps);
                let target = self.rng.chance(50).then_some(slot + DEST);
                self.push(mremap(slot, 2, 0, target));
            }
            2 if !self.files.is_empty() => {
                let id = self.rng.pick(&self.files.clone());
                let backing = Backing::File {
                    id,
                    pgoff: MAX_PGOFF,
                };
                self.push(mmap(slot, 0, Prot::READ, backing, Sharing::Private));
            }
            _ => {
                self.push(mmap(slot, 4, rw, Backing::Anon, Sharing::Private));
                self.push(mmap(
                    slot + 4,
                    4,
                    Prot::READ,
                    Backing::Anon,
                    Sharing::Private,
                ));
                self.push(mmap(slot + DEST, 8, rw, Backing::Anon, Sharing::Shared));
                self.push(Op::Maps);
                self.push(mremap(slot, 8, 5, Some(slot + DEST)));
                self.push(Op::Maps);
            }
        }
    }
}
