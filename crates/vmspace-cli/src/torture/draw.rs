//! What a worker does next, drawn at random. Mapping changes are vmscript
//! [`Op`]s, applied by [`backend::apply`](crate::backend::apply) as `replay`
//! applies a script's; `mmap` is also drawn with `MAP_FIXED_NOREPLACE`
//! ([`Placement`]), which vmscript does not spell. Loads and stores are
//! torture's own: a word whose value names its store (see
//! [`worker`](super::worker)).

use rand::rngs::SmallRng;
use rand::Rng;

use crate::backend::Placement;
use crate::script::{Backing, Op, Prot, Sharing};

use super::files::{DATA_IDS, RO_ID, RO_REOPEN_ID};
use super::{DATA_PAGES, PAGES, RO_PAGES};

/// One step of a worker.
#[derive(Clone, Debug)]
pub(super) enum Step {
    /// A store of a fresh value to the first word of window page `page`.
    Store { page: u64 },
    /// A load of the first word of window page `page`.
    Load { page: u64 },
    /// `msync` of the whole window.
    Msync,
    /// A mapping change.
    Change(Op, Placement),
    /// A fork, and steps in the child (see [`fork`](super::fork)).
    Fork,
}

/// One step in this many is a fork.
const FORK_ONE_IN: u32 = 500;

/// Draws a step: a fork now and then; of the others, half loads and
/// stores, a few `msync`s, the rest mapping changes.
pub(super) fn step(rng: &mut SmallRng) -> Step {
    if rng.gen_ratio(1, FORK_ONE_IN) {
        return Step::Fork;
    }
    match rng.gen_range(0..100) {
        0..=24 => Step::Store {
            page: rng.gen_range(0..PAGES),
        },
        25..=49 => Step::Load {
            page: rng.gen_range(0..PAGES),
        },
        50..=51 => Step::Msync,
        _ => {
            let (op, placement) = change(rng);
            Step::Change(op, placement)
        }
    }
}

/// A mapping change of 1 to 8 pages inside the window: `mmap` (anonymous
/// or file, private or shared), `munmap`, `mprotect`, `mremap` (in place,
/// or moved within the window) or `madvise(DONTNEED)`.
fn change(rng: &mut SmallRng) -> (Op, Placement) {
    let page = rng.gen_range(0..PAGES);
    let npages = rng.gen_range(1..=8).min(PAGES - page);
    let op = match rng.gen_range(0..100) {
        0..=29 => {
            let (backing, sharing) = source(rng);
            let op = Op::Mmap {
                page,
                npages,
                prot: prot(rng),
                backing,
                sharing,
                flags: Default::default(),
            };
            let placement = if rng.gen_bool(0.1) {
                Placement::NoReplace
            } else {
                Placement::Replace
            };
            return (op, placement);
        }
        30..=44 => Op::Munmap { page, npages },
        45..=69 => Op::Mprotect {
            page,
            npages,
            prot: prot(rng),
        },
        70..=89 => remap(rng, page, npages),
        _ => Op::MadviseDontneed { page, npages },
    };
    (op, Placement::Replace)
}

/// What an `mmap` maps: private or shared anonymous memory, a data file
/// (shared) or the read-only file, as it is or opened afresh (private; the
/// range may pass its end).
fn source(rng: &mut SmallRng) -> (Backing, Sharing) {
    match rng.gen_range(0..10) {
        0..=3 => (Backing::Anon, Sharing::Private),
        4..=5 => (Backing::Anon, Sharing::Shared),
        6..=7 => (
            Backing::File {
                id: DATA_IDS[rng.gen_range(0..DATA_IDS.len())],
                pgoff: rng.gen_range(0..DATA_PAGES - 4),
            },
            Sharing::Shared,
        ),
        8 => (
            Backing::File {
                id: RO_ID,
                pgoff: rng.gen_range(0..RO_PAGES),
            },
            Sharing::Private,
        ),
        _ => (
            Backing::File {
                id: RO_REOPEN_ID,
                pgoff: rng.gen_range(0..RO_PAGES),
            },
            Sharing::Private,
        ),
    }
}

/// An `mremap` of `old_npages` at `page`: in place to 1 to 8 pages, or
/// moved to a page of the window, keeping or changing its size.
fn remap(rng: &mut SmallRng, page: u64, old_npages: u64) -> Op {
    let new = rng.gen_range(1..=8);
    let new_page = rng
        .gen_bool(0.6)
        .then(|| rng.gen_range(0..PAGES.saturating_sub(new).max(1)));
    let new_npages = if new_page.is_none() || rng.gen_bool(0.5) {
        new
    } else {
        old_npages
    };
    Op::Mremap {
        page,
        old_npages,
        new_npages,
        new_page,
    }
}

/// A protection: mostly read-write, else read-only or none.
fn prot(rng: &mut SmallRng) -> Prot {
    match rng.gen_range(0..10) {
        0..=5 => Prot::READ_WRITE,
        6..=8 => Prot::READ,
        _ => Prot::NONE,
    }
}
