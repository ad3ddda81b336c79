//! The checker's model: the mapping state after each mapping change, the
//! cells that pages show, and the value events of each cell (see the
//! interval semantics in the [module documentation](super)). At each
//! checkpoint [`Model::carry_over`] prunes it to what a later access can be
//! judged against.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use vmspace::{Errno, FaultCause, File, MapInfo, Prot, PAGE_SIZE};

use crate::script::Op;

use super::files::{Files, RO_ID};
use super::fork::ForkRec;
use super::store::file_word;
use super::{BASE, PAGES, RO_PAGES};

/// What a cell is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A private anonymous page.
    Anon,
    /// A private copy of page `pgoff` of the read-only file.
    PrivFile(u64),
    /// A page of a file or shared-memory object.
    Shared,
    /// A page past the end of its object: every access is a bus error.
    PastEnd,
    /// The model lost track (a call failed half-way): not checked.
    Unknown,
}

/// What a page shows in one mapping state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) cell: u32,
    pub(super) prot: Prot,
}

/// An event that gives a cell a value.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ev {
    pub(super) value: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    /// It certainly happened to this cell (so it supersedes older values).
    pub(super) definite: bool,
}

/// A mapping state and the interval of the change that made it.
pub(super) struct StateRec {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) slots: Vec<Option<Slot>>,
}

/// One load or store.
#[derive(Clone, Copy, Debug)]
pub(super) struct Access {
    pub(super) page: u64,
    pub(super) write: bool,
    pub(super) value: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) result: Result<(), FaultCause>,
}

/// The checker's model; see the module documentation.
pub(super) struct Model {
    /// What each cell is, by cell number.
    pub(super) kinds: Vec<Kind>,
    /// Cells of shared pages by (object address, page offset).
    pub(super) shared: HashMap<(usize, u64), u32>,
    /// Every object seen and alive at the last checkpoint, as a weak
    /// reference: that keeps its allocation,
    /// so its address is never reused for another object, but lets the
    /// object (and its pages) go when the last mapping does.
    pub(super) objects: HashMap<usize, Weak<File>>,
    /// The current state.
    pub(super) state: Vec<Option<Slot>>,
    /// The state when the epoch began, then one per change.
    pub(super) history: Vec<StateRec>,
    /// Value events of this epoch, by cell (carried ones included).
    pub(super) events: HashMap<u32, Vec<Ev>>,
    /// The single cell of private pages past the end of the read-only file.
    pub(super) past_end: u32,
    /// Mapping changes recorded.
    pub(super) mapping_ops: u64,
    /// Pages given an unknown cell.
    pub(super) unknown_pages: u64,
    /// The forks of this epoch and what their children saw.
    pub(super) forks: Vec<ForkRec>,
    /// Forks done.
    pub(super) forks_done: u64,
}

impl Model {
    pub(super) fn new() -> Model {
        Model {
            kinds: vec![Kind::PastEnd],
            shared: HashMap::new(),
            objects: HashMap::new(),
            state: vec![None; PAGES as usize],
            history: vec![StateRec {
                start: 0,
                end: 0,
                slots: vec![None; PAGES as usize],
            }],
            events: HashMap::new(),
            past_end: 0,
            mapping_ops: 0,
            unknown_pages: 0,
            forks: Vec::new(),
            forks_done: 0,
        }
    }

    /// Records held: cells, value events, shared-page entries, objects and
    /// mapping states.
    pub(super) fn records(&self) -> usize {
        self.kinds.len()
            + self.events.values().map(Vec::len).sum::<usize>()
            + self.shared.len()
            + self.objects.len()
            + self.history.len()
    }

    /// A new cell of `kind`, whose content `initial` (if known) is given
    /// during `[start, end]`.
    pub(super) fn new_cell(
        &mut self,
        kind: Kind,
        initial: Option<u64>,
        start: u64,
        end: u64,
    ) -> u32 {
        let id = self.kinds.len() as u32;
        self.kinds.push(kind);
        if let Some(value) = initial {
            self.add_event(id, value, start, end, true);
        }
        id
    }

    /// Records that `cell` was given `value` during `[start, end]`.
    pub(super) fn add_event(
        &mut self,
        cell: u32,
        value: u64,
        start: u64,
        end: u64,
        definite: bool,
    ) {
        self.events.entry(cell).or_default().push(Ev {
            value,
            start,
            end,
            definite,
        });
    }

    /// The cell of page `pgoff` of a shared object (created on first sight,
    /// with the object's initial content from before the run).
    pub(super) fn shared_cell(&mut self, object: &Arc<File>, pgoff: u64, initial: u64) -> u32 {
        let key = (Arc::as_ptr(object) as usize, pgoff);
        if let Some(&c) = self.shared.get(&key) {
            return c;
        }
        self.objects
            .entry(key.0)
            .or_insert_with(|| Arc::downgrade(object));
        let c = self.new_cell(Kind::Shared, Some(initial), 0, 0);
        self.shared.insert(key, c);
        c
    }

    /// Records the state after mapping op `op` (which returned `result`),
    /// read from `maps`, stamped `[start, end]`.
    pub(super) fn apply(
        &mut self,
        op: &Op,
        result: Result<u64, Errno>,
        maps: &[MapInfo],
        files: &Files,
        start: u64,
        end: u64,
    ) {
        self.mapping_ops += 1;
        let prev = self.state.clone();
        let mut next = vec![None; PAGES as usize];
        for info in maps {
            let from = info.start.max(BASE);
            let to = info.end.min(BASE + PAGES * PAGE_SIZE);
            let mut addr = from;
            while addr < to {
                let p = (addr - BASE) / PAGE_SIZE;
                let cell = self.cell_after(op, result, info, addr, p, &prev, files, start, end);
                next[p as usize] = Some(Slot {
                    cell,
                    prot: info.prot,
                });
                addr += PAGE_SIZE;
            }
        }
        if let Op::MadviseDontneed { page, npages } = *op {
            for p in page..(page + npages).min(PAGES) {
                let Some(slot) = next[p as usize] else {
                    continue;
                };
                let value = match self.kinds[slot.cell as usize] {
                    Kind::Anon => 0,
                    Kind::PrivFile(pgoff) => file_word(RO_ID, pgoff),
                    _ => continue,
                };
                self.add_event(slot.cell, value, start, end, result.is_ok());
            }
        }
        self.history.push(StateRec {
            start,
            end,
            slots: next.clone(),
        });
        self.state = next;
    }

    /// The cell page `p` (at `addr`, inside `info`) shows after `op`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cell_after(
        &mut self,
        op: &Op,
        result: Result<u64, Errno>,
        info: &MapInfo,
        addr: u64,
        p: u64,
        prev: &[Option<Slot>],
        files: &Files,
        start: u64,
        end: u64,
    ) -> u32 {
        let pgoff_here = |object_pgoff: u64| object_pgoff + (addr - info.start) / PAGE_SIZE;
        if let (true, Some((object, pgoff))) = (info.shared, &info.object) {
            let pgoff = pgoff_here(*pgoff);
            if pgoff >= object.pages() {
                return self.past_end;
            }
            let initial = files.initial_word(object, pgoff);
            return self.shared_cell(object, pgoff, initial);
        }
        let want = match &info.object {
            None => Kind::Anon,
            Some((_, pgoff)) if pgoff_here(*pgoff) >= RO_PAGES => return self.past_end,
            Some((_, pgoff)) => Kind::PrivFile(pgoff_here(*pgoff)),
        };
        match origin(op, result, p) {
            Origin::New => {
                let initial = match want {
                    Kind::PrivFile(pgoff) => file_word(RO_ID, pgoff),
                    _ => 0,
                };
                self.new_cell(want, Some(initial), start, end)
            }
            Origin::From(q) => {
                let q = match (op, prev[q as usize]) {
                    // A moved page whose source was a gap keeps what was there.
                    (Op::Mremap { .. }, None) => p,
                    _ => q,
                };
                match prev[q as usize] {
                    Some(slot) if self.kinds[slot.cell as usize] == want => slot.cell,
                    _ => {
                        self.unknown_pages += 1;
                        self.new_cell(Kind::Unknown, None, start, end)
                    }
                }
            }
        }
    }

    /// Starts a new epoch at clock `now`, keeping only what an access after
    /// `now` can be judged against. No access is running (the workers wait
    /// at the checkpoint's barrier), so a later access sees the current state
    /// only, and in a cell either a value stored during it or one that was
    /// legitimate at `now`: not superseded by a definite event. Those values
    /// are kept, stamped `[now, now]`, for the cells that the current state
    /// or a live object shows. Everything else goes: earlier states,
    /// superseded values, cells that no page can show again, objects that
    /// are gone. The kept cells are numbered afresh from 0, so cell numbers
    /// stay small however long the run.
    pub(super) fn carry_over(&mut self, now: u64) {
        self.drop_dead_objects();
        let mut live: Vec<u32> = self.state.iter().flatten().map(|s| s.cell).collect();
        live.extend(self.shared.values().copied());
        live.push(self.past_end);
        live.sort_unstable();
        live.dedup();
        let renumber: HashMap<u32, u32> = live
            .iter()
            .enumerate()
            .map(|(new, &old)| (old, new as u32))
            .collect();
        let mut events = HashMap::new();
        for (new, old) in live.iter().enumerate() {
            if let Some(evs) = self.events.get(old) {
                events.insert(new as u32, legitimate_at(evs, now));
            }
        }
        self.kinds = live.iter().map(|&c| self.kinds[c as usize]).collect();
        self.events = events;
        for slot in self.state.iter_mut().flatten() {
            slot.cell = renumber[&slot.cell];
        }
        for cell in self.shared.values_mut() {
            *cell = renumber[cell];
        }
        self.past_end = renumber[&self.past_end];
        self.forks.clear();
        self.history = vec![StateRec {
            start: now,
            end: now,
            slots: self.state.clone(),
        }];
    }

    /// Forgets the objects that are gone and the cells of their pages.
    /// Dropping an object's weak reference lets a new object take its
    /// address, which is harmless once no entry of `shared` names it.
    fn drop_dead_objects(&mut self) {
        self.objects.retain(|_, object| object.strong_count() > 0);
        let objects = &self.objects;
        self.shared
            .retain(|(object, _), _| objects.contains_key(object));
    }
}

/// The values of `evs` (a cell's events, every one finished) that are
/// legitimate at clock `now`, each once, stamped `[now, now]`.
fn legitimate_at(evs: &[Ev], now: u64) -> Vec<Ev> {
    let mut kept: Vec<Ev> = evs
        .iter()
        .filter(|x| !superseded(evs, x, u64::MAX))
        .map(|x| Ev {
            value: x.value,
            start: now,
            end: now,
            definite: true,
        })
        .collect();
    kept.sort_by_key(|e| e.value);
    kept.dedup_by_key(|e| e.value);
    kept
}

/// Where a page's content comes from after a change.
pub(super) enum Origin {
    /// A fresh cell.
    New,
    /// The cell page `q` showed before.
    From(u64),
}

pub(super) fn origin(op: &Op, result: Result<u64, Errno>, p: u64) -> Origin {
    let Ok(ret) = result else {
        return Origin::From(p);
    };
    match *op {
        Op::Mmap { page, npages, .. } if (page..page + npages).contains(&p) => Origin::New,
        Op::Mremap {
            page,
            old_npages: old,
            new_npages: new,
            ..
        } => {
            let r = (ret - BASE) / PAGE_SIZE;
            let kept = old.min(new);
            if r == page {
                if (page + old..page + new).contains(&p) {
                    return Origin::New;
                }
                return Origin::From(p);
            }
            if (r..r + kept).contains(&p) {
                Origin::From(page + (p - r))
            } else if (r + kept..r + new).contains(&p) {
                Origin::New
            } else {
                Origin::From(p)
            }
        }
        _ => Origin::From(p),
    }
}

/// Whether a definite event of `evs` began after `x` ended and ended before
/// `before`.
pub(super) fn superseded(evs: &[Ev], x: &Ev, before: u64) -> bool {
    evs.iter()
        .any(|y| y.definite && y.start > x.end && y.end < before)
}
