//! `fork` in generated scripts: the scenario that forks (once per script)
//! and works both sides, and the tracker that tells from the host's output
//! which fork cells ([`ForkCase`]) a script reached.
//!
//! The scenario maps a private and a shared range at a free place, writes
//! both, sometimes marks the private one `dontfork` or `wipeonfork`, forks,
//! and then, on the two sides in a random order, reads what the other side
//! wrote before and after the fork, writes, and unmaps part of a range on
//! one side. Random steps then go on on the side the scenario ended on; a
//! later fork step switches sides and reads recently written pages there.
//! The generator's shadow follows the parent's mappings only, which is
//! enough to aim (it is a rough guide anyway).

use std::collections::HashMap;

use super::cells::{Cell, ForkCase};
use super::{mmap, Generator};
use crate::script::{Advice, Backing, Op, Prot, Sharing, Side, FILE_PAGES};

impl Generator<'_> {
    /// The fork step: forks and works both sides the first time, later
    /// switches sides and reads a few recently written pages.
    pub(super) fn fork_step(&mut self) {
        if let Some(side) = self.side {
            let other = match side {
                Side::Parent => Side::Child,
                Side::Child => Side::Parent,
            };
            self.switch(other);
            for _ in 0..self.rng.between(1, 3) {
                let region = self.region();
                let op = self.read(region);
                self.push(op);
            }
            return;
        }
        let len = self.rng.between(1, 4);
        let Some(private) = self.free_place(2 * len) else {
            return;
        };
        let shared = private + len;
        let rw = Prot::READ_WRITE;
        let backing = match self.files.first() {
            Some(&id) if self.rng.chance(50) => Backing::File {
                id,
                pgoff: self.rng.below(FILE_PAGES - len),
            },
            _ => Backing::Anon,
        };
        self.push(mmap(private, len, rw, Backing::Anon, Sharing::Private));
        self.push(mmap(shared, len, rw, backing, Sharing::Shared));
        let k = self.rng.below(len);
        let (p, s) = (private + k, shared + k);
        for page in [p, s] {
            let value = self.value();
            self.push(Op::Write { page, value });
        }
        if self.rng.chance(25) {
            let advice = self.rng.pick(&[Advice::Dontfork, Advice::Wipeonfork]);
            self.push(Op::Madvise {
                page: private,
                npages: len,
                advice,
            });
        }
        self.push(Op::Fork);
        self.side = Some(Side::Parent);
        let first = self.rng.pick(&[Side::Parent, Side::Child]);
        let second = match first {
            Side::Parent => Side::Child,
            Side::Child => Side::Parent,
        };
        // One side writes both pages, the other reads them (copy-on-write
        // of the private page, sharing of the shared one), and the other
        // way round.
        for (writer, reader) in [(first, second), (second, first)] {
            self.switch(writer);
            for page in [p, s] {
                self.push(Op::Read { page });
                let value = self.value();
                self.push(Op::Write { page, value });
            }
            self.switch(reader);
            self.push(Op::Read { page: p });
            self.push(Op::Read { page: s });
        }
        // One side unmaps the private range; the other still reads it.
        let unmapper = self.rng.pick(&[Side::Parent, Side::Child]);
        self.switch(unmapper);
        self.push(Op::Munmap {
            page: private,
            npages: len,
        });
        if self.rng.chance(50) {
            self.push(Op::Maps);
        }
        let other = match unmapper {
            Side::Parent => Side::Child,
            Side::Child => Side::Parent,
        };
        self.switch(other);
        self.push(Op::Read { page: p });
        if self.rng.chance(50) {
            self.push(Op::Maps);
        }
    }

    /// Makes the following ops run on `side` (a `child`/`parent` line when
    /// it is not already the current side).
    fn switch(&mut self, side: Side) {
        if self.side != Some(side) {
            self.push(Op::Side(side));
            self.side = Some(side);
        }
    }

    fn value(&mut self) -> u8 {
        self.rng.between(1, 255) as u8
    }
}

/// What [`ForkTracker`] remembers per side: the pages written since the
/// fork (last value), and the ranges unmapped since.
#[derive(Default)]
struct SideState {
    written: HashMap<u64, u8>,
    unmapped: Vec<(u64, u64)>,
}

/// Follows a script across its `fork` (from its ops and host result
/// lines) and names the fork cells each op reaches.
#[derive(Default)]
pub(super) struct ForkTracker {
    /// The current side, once the script has forked.
    side: Option<Side>,
    /// Pages written before the fork, with their last value.
    before: HashMap<u64, u8>,
    parent: SideState,
    child: SideState,
}

impl ForkTracker {
    /// The fork cells of `op`, whose result line is `line`; updates the
    /// state.
    pub(super) fn step(&mut self, op: &Op, line: &str) -> Vec<Cell> {
        let ok = line == "ok";
        let mut cells = Vec::new();
        match *op {
            Op::Fork if ok => self.side = Some(Side::Parent),
            Op::Side(side) if self.side.is_some() => self.side = Some(side),
            Op::Write { page, value } if ok => match self.side {
                None => {
                    self.before.insert(page, value);
                }
                Some(side) => {
                    self.state(side).written.insert(page, value);
                    cells.push(Cell::Fork(match side {
                        Side::Parent => ForkCase::WriteInParent,
                        Side::Child => ForkCase::WriteInChild,
                    }));
                }
            },
            Op::Munmap { page, npages } if ok && npages > 0 => {
                if let Some(side) = self.side {
                    self.state(side).unmapped.push((page, page + npages));
                }
            }
            Op::Read { page } => {
                if let (Some(side), Some(value)) = (self.side, read_value(line)) {
                    cells.extend(self.read(side, page, value));
                }
            }
            _ => {}
        }
        cells
    }

    /// The cells of a read of `value` at `page` on `side`.
    fn read(&mut self, side: Side, page: u64, value: u8) -> Vec<Cell> {
        let other = match side {
            Side::Parent => &self.child,
            Side::Child => &self.parent,
        };
        let mine = match side {
            Side::Parent => &self.parent,
            Side::Child => &self.child,
        };
        let mut cells = Vec::new();
        if let Some(&theirs) = other.written.get(&page) {
            let shared_at_fork = self.before.contains_key(&page);
            if shared_at_fork && value != theirs {
                cells.push(Cell::Fork(ForkCase::CowOfShared));
            }
            let untouched_here = !mine.written.contains_key(&page);
            if value == theirs && untouched_here && self.before.get(&page) != Some(&theirs) {
                cells.push(Cell::Fork(ForkCase::SharedAcross));
            }
        }
        if other.unmapped.iter().any(|&(s, e)| s <= page && page < e) {
            cells.push(Cell::Fork(ForkCase::MunmapOneSide));
        }
        cells
    }

    fn state(&mut self, side: Side) -> &mut SideState {
        match side {
            Side::Parent => &mut self.parent,
            Side::Child => &mut self.child,
        }
    }
}

/// The byte of a `= V` result line.
fn read_value(line: &str) -> Option<u8> {
    line.strip_prefix("= ")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse;

    /// The cells of each op of `script`, given its host output.
    fn cells(script: &str, output: &[&str]) -> Vec<Vec<Cell>> {
        let ops = parse(script).unwrap();
        let mut tracker = ForkTracker::default();
        ops.iter()
            .zip(output)
            .map(|(op, line)| tracker.step(op, line))
            .collect()
    }

    #[test]
    fn fork_cells_follow_the_output() {
        let script = "write 0 1\nwrite 8 2\nfork\nchild\nwrite 0 5\nwrite 8 6\nmunmap 20 2\n\
                      parent\nread 0\nread 8\nread 20\nwrite 1 7\nread 0";
        let output = [
            "ok", "ok", "ok", "child", "ok", "ok", "ok", "parent", "= 1", "= 6", "= 0", "ok", "= 5",
        ];
        let got = cells(script, &output);
        assert!(got[..4].iter().all(Vec::is_empty), "{got:?}");
        assert_eq!(got[4], vec![Cell::Fork(ForkCase::WriteInChild)]);
        assert_eq!(got[8], vec![Cell::Fork(ForkCase::CowOfShared)]);
        assert_eq!(got[9], vec![Cell::Fork(ForkCase::SharedAcross)]);
        assert_eq!(got[10], vec![Cell::Fork(ForkCase::MunmapOneSide)]);
        assert_eq!(got[11], vec![Cell::Fork(ForkCase::WriteInParent)]);
        // A read that shows the other side's write is no copy-on-write.
        assert_eq!(got[12], vec![Cell::Fork(ForkCase::SharedAcross)]);
    }

    #[test]
    fn nothing_counts_before_a_fork_or_on_failures() {
        let got = cells(
            "write 0 1\nread 0\nfork\nchild\nwrite 0 2",
            &["ok", "= 1", "err ENOMEM", "child", "SEGV"],
        );
        assert!(got.iter().all(Vec::is_empty), "{got:?}");
    }
}
