//! `mremap`: resizing and moving mappings (Linux's `mm/mremap.c`).
//!
//! | call | what happens |
//! |---|---|
//! | `new_len < old_len`, not fixed | the tail `[addr + new_len, addr + old_len)` is unmapped; the address stays |
//! | `new_len == old_len`, not fixed | nothing; the address stays |
//! | grow, old range ends at its VMA's end, room above | the VMA grows in place (and may merge with the next) |
//! | grow otherwise, `MAYMOVE` | the range moves to a new place (top-down placement) and grows there |
//! | grow otherwise | `ENOMEM` |
//! | `MAYMOVE \| FIXED` | the destination is unmapped; a shrinking call first unmaps the old tail; the range moves |
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

use crate::error::Errno;
use crate::frame::PAGE_SIZE;
use crate::pagetable::{Pte, ADDR_LIMIT};
use crate::space::{RemapFlags, Writer};
use crate::vma::Vma;
use std::sync::Arc;

/// See the module documentation.
pub(crate) fn mremap(
    w: &mut Writer<'_>,
    addr: u64,
    old_len: u64,
    new_len: u64,
    flags: RemapFlags,
) -> Result<u64, Errno> {
    let vma = w.find(addr).ok_or(Errno::EFAULT)?;
    if old_len == 0 && !vma.shared {
        return Err(Errno::EINVAL);
    }
    let old_end = addr.checked_add(old_len).ok_or(Errno::EINVAL)?;
    if let Some(dest) = flags.fixed {
        return move_fixed(w, addr, old_len, new_len, dest);
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

fn move_fixed(
    w: &mut Writer<'_>,
    addr: u64,
    old_len: u64,
    new_len: u64,
    dest: u64,
) -> Result<u64, Errno> {
    if !dest.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let dest_end = dest
        .checked_add(new_len)
        .filter(|&e| e <= ADDR_LIMIT)
        .ok_or(Errno::EINVAL)?;
    let old_end = addr + old_len;
    if dest < old_end.max(addr + 1) && addr < dest_end {
        return Err(Errno::EINVAL);
    }
    w.unmap(dest, dest_end)?;
    let mut old_len = old_len;
    if old_len > new_len {
        w.unmap(addr + new_len, old_end)?;
        old_len = new_len;
    }
    let vma = w.find(addr).ok_or(Errno::EFAULT)?;
    if old_len == 0 {
        return duplicate_at(w, &vma, addr, dest, new_len);
    }
    if addr + old_len > vma.end {
        return Err(Errno::EFAULT);
    }
    move_range(w, addr, old_len, dest, new_len)?;
    Ok(dest)
}

/// Grows `vma` to end at `new_end` if nothing is mapped there; merges with the
/// next VMA when that becomes possible.
fn grow_in_place(w: &mut Writer<'_>, vma: &Arc<Vma>, new_end: u64) -> Result<bool, Errno> {
    if new_end > ADDR_LIMIT || !w.space.vmas_in(vma.end, new_end).is_empty() {
        return Ok(false);
    }
    vma.write_lock(w.seq);
    let grown = vma.piece(vma.start, new_end, w.seq);
    w.insert(grown);
    vma.detach();
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
    src.write_lock(w.seq);
    let pgoff = if src.is_anon() && src.anon.get().is_none() {
        dest / PAGE_SIZE
    } else {
        src.pgoff
    };
    w.insert(src.relocated(dest, dest + new_len, pgoff, w.seq));
    move_ptes(w, addr, old_end, dest);
    w.unmap(addr, old_end)?;
    w.merge_around(dest, dest + new_len);
    Ok(())
}

/// Moves the page-table entries of `[start, end)` to `dest`. Takes the two
/// PTE locks of a source and a destination table in address order.
fn move_ptes(w: &Writer<'_>, start: u64, end: u64, dest: u64) {
    let spec = w.begin_spec_change();
    let pt = w.space.page_table();
    let mut moved_any = false;
    let mut a = start;
    while a < end {
        let to = dest + (a - start);
        if let Some(src) = pt.table(a) {
            if src.read(a).present() {
                let dst = pt
                    .table_or_create(to)
                    .expect("destination checked against ADDR_LIMIT");
                let same = std::ptr::eq(src, dst);
                let (g1, g2) = if same {
                    (src.lock(), None)
                } else if a < to {
                    let g1 = src.lock();
                    (g1, Some(dst.lock()))
                } else {
                    let g2 = dst.lock();
                    (src.lock(), Some(g2))
                };
                let pte = g1.get(a);
                if pte.present() {
                    g1.set(a, Pte(0));
                    g2.as_ref().unwrap_or(&g1).set(to, pte);
                    moved_any = true;
                }
            }
        }
        a += PAGE_SIZE;
    }
    w.end_spec_change(spec);
    if moved_any {
        w.space.cpus().shootdown();
    }
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
