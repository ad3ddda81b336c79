//! The generator's rough picture of the address space: which page ranges it
//! believes are mapped, and how. It only steers the choice of targets (so that
//! operations hit, straddle and neighbour real mappings); it is never used to
//! predict results, so approximations here cost coverage, not correctness.
//!
//! A [`Region`] is what one `mmap` created, cut down by later operations. The
//! shadow never merges regions: adjacent compatible regions stay separate,
//! which is exactly what the generator wants to find neighbours to merge.

use crate::script::{Backing, Prot, Sharing};

/// A range of pages the generator believes is mapped with one set of
/// attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Region {
    /// First page.
    pub start: u64,
    /// One past the last page.
    pub end: u64,
    /// Protection.
    pub prot: Prot,
    /// Anonymous, or the file and its page mapped at `start`.
    pub backing: Backing,
    /// Private or shared.
    pub sharing: Sharing,
}

impl Region {
    /// The number of pages.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// The backing as seen from `page` (the file offset advances with it).
    /// `page` may lie outside the region, before it only if the offset allows.
    pub fn backing_at(&self, page: u64) -> Backing {
        match self.backing {
            Backing::Anon => Backing::Anon,
            Backing::File { id, pgoff } => Backing::File {
                id,
                pgoff: (pgoff + page).saturating_sub(self.start),
            },
        }
    }

    /// The part `start..end` of this region (clamped to it).
    fn slice(&self, start: u64, end: u64) -> Region {
        let (start, end) = (start.max(self.start), end.min(self.end));
        Region {
            start,
            end,
            backing: self.backing_at(start),
            ..*self
        }
    }

    /// The same region, `len` pages long, starting at `start`.
    fn placed(&self, start: u64, len: u64) -> Region {
        Region {
            start,
            end: start + len,
            ..*self
        }
    }
}

/// The mapped regions, sorted by address and never overlapping.
#[derive(Clone, Debug, Default)]
pub(super) struct Shadow {
    regions: Vec<Region>,
}

impl Shadow {
    /// All regions, in address order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region holding `page`, if any.
    pub fn at(&self, page: u64) -> Option<Region> {
        self.regions
            .iter()
            .find(|region| region.start <= page && page < region.end)
            .copied()
    }

    /// Whether no region touches `start..end`.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        self.pieces(start, end).is_empty()
    }

    /// The parts of regions inside `start..end`, in address order.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<Region> {
        self.regions
            .iter()
            .filter(|region| region.start < end && start < region.end)
            .map(|region| region.slice(start, end))
            .collect()
    }

    /// Forgets `start..end`, cutting the regions that straddle its edges.
    pub fn unmap(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut kept = Vec::with_capacity(self.regions.len() + 1);
        for region in &self.regions {
            if region.end <= start || end <= region.start {
                kept.push(*region);
                continue;
            }
            if region.start < start {
                kept.push(region.slice(region.start, start));
            }
            if end < region.end {
                kept.push(region.slice(end, region.end));
            }
        }
        self.regions = kept;
    }

    /// Adds `region`, replacing whatever was there (`MAP_FIXED`).
    pub fn map(&mut self, region: Region) {
        if region.start >= region.end {
            return;
        }
        self.unmap(region.start, region.end);
        let at = self
            .regions
            .partition_point(|other| other.start < region.start);
        self.regions.insert(at, region);
    }

    /// Gives the mapped parts of `start..end` the protection `prot`.
    pub fn protect(&mut self, start: u64, end: u64, prot: Prot) {
        for piece in self.pieces(start, end) {
            self.map(Region { prot, ..piece });
        }
    }

    /// Approximates `mremap`: resizes in place, or moves to `new_page`.
    pub fn remap(&mut self, page: u64, old: u64, new: u64, new_page: Option<u64>) {
        if new == 0 {
            return;
        }
        match new_page {
            None => self.resize(page, old, new),
            Some(target) => self.relocate(page, old, new, target),
        }
    }

    /// In-place `mremap`: shrinks, or grows into free pages.
    fn resize(&mut self, page: u64, old: u64, new: u64) {
        let Some(region) = self.at(page) else { return };
        if old == 0 || page + old > region.end {
            return;
        }
        if new < old {
            self.unmap(page + new, page + old);
        } else if page + old == region.end && self.is_free(region.end, page + new) {
            self.map(Region {
                start: region.end,
                end: page + new,
                backing: region.backing_at(region.end),
                ..region
            });
        }
    }

    /// Moving `mremap`: duplication, whole-range moves, resizing moves.
    fn relocate(&mut self, page: u64, old: u64, new: u64, target: u64) {
        let overlaps = target < page + old.max(1) && page < target + new;
        let Some(first) = self.at(page) else { return };
        if overlaps {
            return;
        }
        if old == 0 {
            if first.sharing == Sharing::Shared {
                self.map(first.slice(page, page + 1).placed(target, new));
            }
            return;
        }
        let pieces = self.pieces(page, page + old);
        if old == new {
            self.unmap(page, page + old);
            for piece in pieces {
                let start = target + (piece.start - page);
                self.map(piece.placed(start, piece.len()));
            }
        } else if pieces.len() == 1 && pieces[0].end == page + old.min(new) {
            self.unmap(page, page + old);
            self.map(pieces[0].placed(target, new));
        } else if pieces.len() == 1 && new < old {
            self.unmap(page, page + old);
            self.map(pieces[0].slice(page, page + new).placed(target, new));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64) -> Region {
        Region {
            start,
            end,
            prot: Prot::READ_WRITE,
            backing: Backing::Anon,
            sharing: Sharing::Private,
        }
    }

    fn file(start: u64, end: u64, pgoff: u64) -> Region {
        Region {
            backing: Backing::File { id: 1, pgoff },
            ..anon(start, end)
        }
    }

    fn spans(shadow: &Shadow) -> Vec<(u64, u64)> {
        shadow.regions().iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn map_over_the_middle_cuts_and_keeps_file_offsets() {
        let mut shadow = Shadow::default();
        shadow.map(file(0, 10, 100));
        shadow.map(anon(3, 5));
        assert_eq!(spans(&shadow), [(0, 3), (3, 5), (5, 10)]);
        assert_eq!(
            shadow.at(7).unwrap().backing_at(7),
            Backing::File { id: 1, pgoff: 107 }
        );
        assert_eq!(
            shadow.regions()[2].backing,
            Backing::File { id: 1, pgoff: 105 }
        );
    }

    #[test]
    fn protect_touches_only_mapped_pages() {
        let mut shadow = Shadow::default();
        shadow.map(anon(0, 4));
        shadow.map(anon(6, 8));
        shadow.protect(2, 7, Prot::READ);
        assert_eq!(spans(&shadow), [(0, 2), (2, 4), (6, 7), (7, 8)]);
        assert_eq!(shadow.at(6).unwrap().prot, Prot::READ);
    }

    #[test]
    fn remap_grows_shrinks_and_moves() {
        let mut shadow = Shadow::default();
        shadow.map(anon(0, 4));
        shadow.remap(0, 4, 6, None);
        assert_eq!(spans(&shadow), [(0, 4), (4, 6)]);
        shadow.remap(0, 4, 2, None);
        assert_eq!(spans(&shadow), [(0, 2), (4, 6)]);
        shadow.remap(0, 6, 6, Some(20));
        assert_eq!(spans(&shadow), [(20, 22), (24, 26)]);
        shadow.remap(20, 2, 5, Some(40));
        assert_eq!(spans(&shadow), [(24, 26), (40, 45)]);
    }
}
