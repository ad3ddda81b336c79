//! `mremap`: resizing and moving mappings (Linux's `mm/mremap.c`).
//!
//! | call | what happens |
//! |---|---|
//! | `new_len < old_len`, not fixed | the tail `[addr + new_len, addr + old_len)` is unmapped; the address stays |
//! | `new_len == old_len`, not fixed | nothing; the address stays |
//! | grow, old range ends at its VMA's end, room above | the VMA grows in place (and may merge with the next) |
//! | grow otherwise, `MAYMOVE` | the range moves to a new place (top-down placement) and grows there |
//! | grow otherwise | `ENOMEM` |
//! | `MAYMOVE \| FIXED`, `new_len == old_len` | every VMA in the range moves, gaps between them kept (Linux 6.17+); only each piece's destination is unmapped |
//! | `MAYMOVE \| FIXED`, growing | the old range must lie in one VMA; the destination is unmapped; the range moves |
//! | `MAYMOVE \| FIXED`, shrinking | the part that moves must lie in one VMA (else `EFAULT`, nothing changed); the destination is unmapped, then the old tail (whatever VMAs or holes it spans); the part moves |
//! | `old_len == 0` on a shared mapping, `MAYMOVE` | a second mapping of the same pages (a duplicate) |
//!
//! Errors, in the order Linux checks them: `EINVAL` for bad arguments (see
//! `AddressSpace::mremap`), for a fixed destination that is unaligned, out of
//! range or overlaps the source, and for `old_len == 0` on a private mapping;
//! `EFAULT` when no VMA contains `addr` or the old range leaves its VMA.
//!
//! A moved range keeps its anonymous object, and its page offset: an
//! anonymous VMA moved after its first fault does not merge with neighbours at
//! the destination whose offsets do not line up (Linux does the same); one that
//! was never faulted gets the offset of its new address.

use crate::config::RemapFlags;
use crate::error::Errno;
use crate::frame::PAGE_SIZE;
use crate::notifier::{Busy, NotifierRange};
use crate::pagetable::{Event, TASK_SIZE};
use crate::vma::Vma;
use crate::writer::Writer;
use std::sync::Arc;

/// See the module documentation.
pub(crate) fn mremap(
    w: &mut Writer<'_>,
    addr: u64,
    old_len: u64,
    new_len: u64,
    flags: RemapFlags,
) -> Result<u64, Errno> {
    let old_end = addr.checked_add(old_len).ok_or(Errno::EINVAL)?;
    if let Some(dest) = flags.fixed {
        check_fixed_destination(w, addr, old_len, new_len, dest)?;
        if old_len == new_len {
            return move_vmas(w, addr, old_end, dest);
        }
        return move_fixed(w, addr, old_len, new_len, dest);
    }
    let vma = w.find(addr).ok_or(Errno::EFAULT)?;
    if old_len == 0 && !vma.shared {
        return Err(Errno::EINVAL);
    }
    if old_len == 0 {
        return if flags.may_move {
            duplicate(w, &vma, addr, new_len)
        } else {
            Err(Errno::ENOMEM)
        };
    }
    if new_len <= old_len {
        w.unmap(addr + new_len, old_end)?;
        return Ok(addr);
    }
    if old_end > vma.end {
        return Err(Errno::EFAULT);
    }
    if old_end == vma.end && grow_in_place(w, &vma, addr + new_len)? {
        return Ok(addr);
    }
    if !flags.may_move {
        return Err(Errno::ENOMEM);
    }
    let dest = place(w, new_len)?;
    move_range(w, addr, old_len, dest, new_len)?;
    Ok(dest)
}

/// The argument checks of a fixed move, made before any VMA is looked at:
/// `EINVAL` for an unaligned or out-of-range destination and for one that
/// overlaps the source; `ENOMEM` when the map count is too close to the limit
/// for the worst case (both ranges split in three).
fn check_fixed_destination(
    w: &Writer<'_>,
    addr: u64,
    old_len: u64,
    new_len: u64,
    dest: u64,
) -> Result<(), Errno> {
    if !dest.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let dest_end = dest
        .checked_add(new_len)
        .filter(|&e| e <= TASK_SIZE)
        .ok_or(Errno::EINVAL)?;
    if addr + old_len > dest && dest_end > addr {
        return Err(Errno::EINVAL);
    }
    if w.space.map_count() + 2 >= w.space.config().max_map_count.saturating_sub(3) {
        return Err(Errno::ENOMEM);
    }
    Ok(())
}

/// A fixed move that also resizes (or duplicates, `old_len == 0`). Growing,
/// the old range must lie in one VMA, checked before the destination is
/// unmapped; shrinking, only the part that moves must (checked first too),
/// then the destination and the old tail are unmapped.
fn move_fixed(
    w: &mut Writer<'_>,
    addr: u64,
    old_len: u64,
    new_len: u64,
    dest: u64,
) -> Result<u64, Errno> {
    let vma = w.find(addr).ok_or(Errno::EFAULT)?;
    if old_len == 0 && !vma.shared {
        return Err(Errno::EINVAL);
    }
    let old_end = addr + old_len;
    // Only the part that moves must lie in one VMA, checked before anything
    // is unmapped; a shrinking call's tail goes, whatever it spans.
    let moving = old_len.min(new_len);
    if addr + moving > vma.end || (old_len <= new_len && old_end > vma.end) {
        return Err(Errno::EFAULT);
    }
    w.unmap(dest, dest + new_len)?;
    let mut old_len = old_len;
    if old_len > new_len {
        w.unmap(addr + new_len, old_end)?;
        old_len = new_len;
    }
    let vma = w.find(addr).ok_or(Errno::EFAULT)?;
    if old_len == 0 {
        return duplicate_at(w, &vma, addr, dest, new_len);
    }
    move_range(w, addr, old_len, dest, new_len)?;
    Ok(dest)
}

/// A fixed move of equal size (Linux 6.17+): every VMA meeting
/// `[addr, end)` moves, clipped to the range, and the gaps between them are
/// kept, so the piece of each VMA lands at the end of the previous moved piece
/// plus the gap that followed it. Only the destination of each piece is
/// unmapped, not the gaps. The range must not start in a gap, and one
/// without any VMA is `EFAULT`. Returns where the first piece went.
fn move_vmas(w: &mut Writer<'_>, addr: u64, end: u64, dest: u64) -> Result<u64, Errno> {
    let mut first = None;
    let mut target = dest;
    let mut last_end = addr;
    let mut cursor = addr;
    while let Some(vma) = w.space.vmas_in(cursor, end).into_iter().next() {
        if first.is_none() && vma.start > addr {
            return Err(Errno::EFAULT);
        }
        let from = vma.start.max(addr);
        let len = vma.end.min(end) - from;
        let to = target + (vma.start.max(last_end) - last_end);
        last_end = vma.end;
        w.unmap(to, to + len)?;
        if w.find(from).is_none() {
            return Err(Errno::EFAULT);
        }
        move_range(w, from, len, to, len)?;
        first.get_or_insert(to);
        target = to + len;
        cursor = from + len;
    }
    first.ok_or(Errno::EFAULT)
}

/// Grows `vma` to end at `new_end` if nothing is mapped there; merges with the
/// next VMA when that becomes possible.
fn grow_in_place(w: &mut Writer<'_>, vma: &Arc<Vma>, new_end: u64) -> Result<bool, Errno> {
    if new_end > TASK_SIZE || !w.space.vmas_in(vma.end, new_end).is_empty() {
        return Ok(false);
    }
    vma.write_lock(w);
    let grown = vma.piece(vma.start, new_end, w.seq);
    w.insert(grown);
    vma.detach(w);
    w.try_merge(new_end);
    Ok(true)
}

/// Top-down placement for a moved range.
fn place(w: &Writer<'_>, len: u64) -> Result<u64, Errno> {
    let cfg = w.space.config();
    let g = vmspace_tree::pin();
    w.space
        .tree()
        .gap_highest(len, PAGE_SIZE, cfg.mmap_min_addr, cfg.mmap_base, &g)
        .ok()
        .flatten()
        .ok_or(Errno::ENOMEM)
}

/// Moves `[addr, addr + old_len)` (inside one VMA) to `dest`, `new_len` long.
fn move_range(
    w: &mut Writer<'_>,
    addr: u64,
    old_len: u64,
    dest: u64,
    new_len: u64,
) -> Result<(), Errno> {
    let old_end = addr + old_len;
    w.split_at(addr)?;
    w.split_at(old_end)?;
    let src = w.find(addr).expect("split above");
    src.write_lock(w);
    let pgoff = if src.is_anon() && src.anon.get().is_none() {
        dest / PAGE_SIZE
    } else {
        src.pgoff
    };
    w.insert(src.relocated(dest, dest + new_len, pgoff, w.seq));
    move_ptes(w, &src, addr, old_end, dest);
    w.unmap(addr, old_end)?;
    w.merge_around(dest, dest + new_len);
    Ok(())
}

/// Moves the page-table entries of `[start, end)` of `src` to `dest`
/// (`PageTable::move_entries`) and flushes the source's translations.
///
/// A file's reverse-map walks are held off meanwhile (its rmap lock, for
/// writing): a walk visits the source and the destination address one after
/// the other, and an entry moving between the two visits would escape it
/// (a write-back's cleaning would leave it writable, and a later write
/// would dirty the page unseen).
fn move_ptes(w: &Writer<'_>, src: &Vma, start: u64, end: u64, dest: u64) {
    let range = NotifierRange::new(start, end, Event::Move, true);
    let inv = match w.space.invalidate_start(range) {
        Ok(inv) => inv,
        Err(Busy) => unreachable!("a blockable invalidation waits"),
    };
    let _no_walks = src.file().map(|f| f.mappings().hold_off_walks());
    let mut batch = w.space.page_table().move_entries(start, end, dest);
    batch.invalidations.push(inv);
    w.space.flush(batch);
}

/// `old_len == 0` on a shared mapping: a new mapping of the same object.
fn duplicate(w: &mut Writer<'_>, vma: &Arc<Vma>, addr: u64, new_len: u64) -> Result<u64, Errno> {
    let dest = place(w, new_len)?;
    duplicate_at(w, vma, addr, dest, new_len)
}

fn duplicate_at(
    w: &mut Writer<'_>,
    vma: &Arc<Vma>,
    addr: u64,
    dest: u64,
    new_len: u64,
) -> Result<u64, Errno> {
    w.insert(vma.relocated(dest, dest + new_len, vma.pgoff_at(addr), w.seq));
    w.merge_around(dest, dest + new_len);
    Ok(dest)
}
