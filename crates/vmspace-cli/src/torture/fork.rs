//! `fork` in the torture: a worker forks the address space while the other
//! workers go on, exercises the child through its own [`Cpu`], and hands
//! what the child saw to the checker.
//!
//! # The fork
//!
//! The fork holds the model's lock, like a mapping change, so no mapping
//! changes during it and the model's current state is the parent's state
//! at the fork: the *view* the child starts with (cells and protections).
//! Loads and stores of the other workers race the fork, so the fork is
//! stamped `[start, end]` by the global clock like any access.
//!
//! # What the child may see
//!
//! Only the forking thread touches the child, so the child's mappings are
//! the view, less what the thread unmapped in it; a fault is legitimate
//! exactly when the view says so (or an armed failure explains it).
//!
//! * A private page (anonymous, or a copy of the read-only file) holds, in
//!   the child, a value legitimate for the parent's cell over the fork's
//!   interval (the rule the checker applies to a load during `[start, end]`),
//!   until the child stores to it; then it holds the child's last value.
//! * A shared page (file or shared memory) is the parent's cell itself: a
//!   child load is judged as a load of that cell at its own interval, and a
//!   child store is a store to that cell, which the parent may see.
//!
//! Child stores carry [`CHILD_TAG`]: they are never events of a parent's
//! private cell, so a parent load that sees one is a violation.
//!
//! The child then unmaps a few pages; the forking thread loads those pages
//! in the parent (ordinary accesses, judged by the ordinary checker, which
//! allows no `NoMapping` fault where the parent maps them), reads the
//! child's window again, runs the child's `check_invariants`, and drops
//! the child: its frames must come back (the run's final leak check).

use rand::rngs::SmallRng;
use rand::Rng;
use vmspace::{Cpu, FaultCause, PAGE_SIZE};

use crate::backend;

use super::inject::Armed;
use super::judge::{explains, prot_name, value_name};
use super::model::{Access, Kind, Model, Slot};
use super::worker::{access, Shared};
use super::PAGES;

/// The top byte of a value written by a store in a child.
pub(super) const CHILD_TAG: u64 = 0xC4 << 56;
/// Private pages each fork stores to in the child (at most; drawn).
const CHILD_STORES: usize = 8;
/// The most pages unmapped in the child.
const CHILD_UNMAP: u64 = 8;

/// One load or store in a child.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChildAccess {
    pub(super) access: Access,
    /// What the child mapped at the page then (`None`: nothing).
    pub(super) slot: Option<Slot>,
    /// The child's last successful store to this private page before it.
    pub(super) own: Option<u64>,
    /// The child's mapping of the page is known (an unmap that failed
    /// leaves it unknown).
    pub(super) known: bool,
}

/// A fork and what its child saw.
pub(super) struct ForkRec {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) accesses: Vec<ChildAccess>,
    /// The child's `check_invariants` failure, if any.
    pub(super) invariants: Option<String>,
}

/// The child as the forking thread knows it.
struct Child {
    view: Vec<Option<Slot>>,
    kinds: Vec<Option<Kind>>,
    own: Vec<Option<u64>>,
    known: Vec<bool>,
    accesses: Vec<ChildAccess>,
}

/// Forks the space (worker `index`, whose store sequence is `seq`), does
/// the child's steps, and records them in the model; the parent loads it
/// makes go to `log`.
pub(super) fn fork(
    sh: &Shared,
    cpu: &mut Cpu,
    rng: &mut SmallRng,
    index: u64,
    seq: &mut u64,
    log: &mut Vec<Access>,
) {
    let (space, mut child, start, end) = {
        let model = sh.model.lock().unwrap();
        let start = sh.tick();
        let space = sh.space.fork();
        let end = sh.tick();
        let kinds = model
            .state
            .iter()
            .map(|s| s.map(|s| model.kinds[s.cell as usize]))
            .collect();
        let child = Child {
            view: model.state.clone(),
            kinds,
            own: vec![None; PAGES as usize],
            known: vec![true; PAGES as usize],
            accesses: Vec::new(),
        };
        (space, child, start, end)
    };
    let mut ccpu = space.cpu();
    read_window(sh, &mut ccpu, &mut child);
    for _ in 0..rng.gen_range(1..=CHILD_STORES) {
        let page = rng.gen_range(0..PAGES);
        *seq += 1;
        let value = CHILD_TAG | (index << 40) | *seq;
        child_access(sh, &mut ccpu, &mut child, page, Some(value));
    }
    let page = rng.gen_range(0..PAGES);
    let npages = rng.gen_range(1..=CHILD_UNMAP).min(PAGES - page);
    let unmapped = space.munmap(backend::addr(page), npages * PAGE_SIZE);
    for p in page..page + npages {
        match unmapped {
            Ok(()) => child.view[p as usize] = None,
            Err(_) => child.known[p as usize] = false,
        }
        log.push(access(sh, cpu, p, None));
    }
    read_window(sh, &mut ccpu, &mut child);
    let invariants = space.check_invariants().err();
    drop(ccpu);
    drop(space);
    let mut model = sh.model.lock().unwrap();
    model.forks_done += 1;
    model.forks.push(ForkRec {
        start,
        end,
        accesses: child.accesses,
        invariants,
    });
}

/// Loads every page of the child's window.
fn read_window(sh: &Shared, ccpu: &mut Cpu, child: &mut Child) {
    for page in 0..PAGES {
        child_access(sh, ccpu, child, page, None);
    }
}

/// A load or store (of `store`) of page `page` in the child.
fn child_access(sh: &Shared, ccpu: &mut Cpu, child: &mut Child, page: u64, store: Option<u64>) {
    let p = page as usize;
    let a = access(sh, ccpu, page, store);
    child.accesses.push(ChildAccess {
        access: a,
        slot: child.view[p],
        own: child.own[p],
        known: child.known[p],
    });
    let private = matches!(child.kinds[p], Some(Kind::Anon | Kind::PrivFile(_)));
    if let (Some(v), Ok(()), true) = (store, a.result, private) {
        child.own[p] = Some(v);
    }
}

/// Makes the children's successful stores to shared pages events of the
/// cells they hit (called with the parent's stores, before any load is
/// judged).
pub(super) fn child_stores(model: &mut Model) {
    let stores: Vec<(u32, Access)> = model
        .forks
        .iter()
        .flat_map(|f| &f.accesses)
        .filter(|c| c.known && c.access.write && c.access.result.is_ok())
        .filter_map(|c| c.slot.map(|s| (s.cell, c.access)))
        .filter(|(cell, _)| model.kinds[*cell as usize] == Kind::Shared)
        .collect();
    for (cell, a) in stores {
        model.add_event(cell, a.value, a.start, a.end, true);
    }
}

/// Judges what the children of this epoch saw; returns the violations.
pub(super) fn judge_children(model: &Model, armed: Armed) -> Vec<String> {
    let mut violations = Vec::new();
    for f in &model.forks {
        if let Some(e) = &f.invariants {
            violations.push(format!(
                "the child of the fork during [{}, {}] breaks an invariant: {e}",
                f.start, f.end
            ));
        }
        for c in f.accesses.iter().filter(|c| c.known) {
            if let Some(what) = judge_child(model, f, c, armed) {
                violations.push(describe(model, f, c, what));
            }
        }
    }
    violations
}

/// What is wrong with child access `c` of fork `f`, if anything.
fn judge_child(model: &Model, f: &ForkRec, c: &ChildAccess, armed: Armed) -> Option<&'static str> {
    let a = &c.access;
    let kind = c.slot.map(|s| model.kinds[s.cell as usize]);
    if kind == Some(Kind::Unknown) {
        return None;
    }
    let allowed = |s: Slot| {
        if a.write {
            s.prot.write
        } else {
            s.prot.read || s.prot.write
        }
    };
    let slot = match (a.result, c.slot) {
        (Err(FaultCause::OutOfMemory), _) => {
            return (!armed.alloc).then_some("an injected fault while none was armed")
        }
        (Err(FaultCause::Io), _) => {
            return (!armed.read).then_some("an injected fault while none was armed")
        }
        (Err(FaultCause::NoMapping), None) => return None,
        (Err(FaultCause::Protection), Some(s)) if !allowed(s) => return None,
        (Err(FaultCause::PastEnd), Some(_)) if kind == Some(Kind::PastEnd) => return None,
        (Err(_), _) => return Some("a fault the child's mapping does not allow"),
        (Ok(()), Some(s)) if allowed(s) && kind != Some(Kind::PastEnd) => s,
        (Ok(()), _) => return Some("an access succeeded where the child's mapping forbids it"),
    };
    if a.write {
        return None;
    }
    let explained = match (kind, c.own) {
        (Some(Kind::Shared), _) => explains(model, slot.cell, a),
        (_, Some(own)) => a.value == own,
        _ => {
            let at_fork = Access {
                start: f.start,
                end: f.end,
                ..*a
            };
            explains(model, slot.cell, &at_fork)
        }
    };
    (!explained)
        .then_some("a value the parent's cell at the fork (or the child's store) does not explain")
}

fn describe(model: &Model, f: &ForkRec, c: &ChildAccess, what: &str) -> String {
    let a = &c.access;
    let mapped = match c.slot {
        None => "unmapped".to_string(),
        Some(s) => format!(
            "cell {} {:?} {}",
            s.cell,
            model.kinds[s.cell as usize],
            prot_name(s.prot)
        ),
    };
    let result = match a.result {
        Ok(()) => format!("= {}", value_name(a.value)),
        Err(cause) => format!("-> {cause:?}"),
    };
    format!(
        "in the child of the fork during [{}, {}]: {what}: {} of page {} {result} during [{}, {}], child maps {mapped}, own store {}",
        f.start,
        f.end,
        if a.write { "store" } else { "load" },
        a.page,
        a.start,
        a.end,
        c.own.map_or("none".to_string(), value_name),
    )
}
