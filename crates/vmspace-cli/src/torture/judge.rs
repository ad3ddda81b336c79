//! Judging an epoch: each access against the states and cell values it may
//! have seen.

use vmspace::{FaultCause, Prot, PAGE_SIZE};

use super::fork;
use super::inject::Armed;
use super::model::{superseded, Access, Kind, Model, StateRec};
use super::BASE;

/// Judges one epoch's accesses against the model, with `armed` the kinds of
/// failure injected during the epoch; returns the violations.
pub(super) fn judge(model: &mut Model, accesses: &mut [Access], armed: Armed) -> Vec<String> {
    accesses.sort_by_key(|a| a.start);
    let mut violations = Vec::new();
    // Stores first: they are events of the cells they may have hit.
    for a in accesses.iter().filter(|a| a.write) {
        let states = candidates(&model.history, a.start, a.end);
        if let Err(cause) = a.result {
            if !fault_allowed(model, states, a, cause, armed) {
                violations.push(describe(model, a, states, "a fault no state allows"));
            }
            continue;
        }
        let mut cells: Vec<u32> = states
            .iter()
            .filter_map(|s| s.slots[a.page as usize])
            .filter(|s| s.prot.write && model.kinds[s.cell as usize] != Kind::PastEnd)
            .map(|s| s.cell)
            .collect();
        cells.sort_unstable();
        cells.dedup();
        if cells.is_empty() {
            violations.push(describe(
                model,
                a,
                states,
                "a store succeeded where no state allows it",
            ));
            continue;
        }
        let definite = cells.len() == 1;
        for c in cells {
            model.add_event(c, a.value, a.start, a.end, definite);
        }
    }
    fork::child_stores(model);
    for evs in model.events.values_mut() {
        evs.sort_by_key(|e| e.start);
    }
    for a in accesses.iter().filter(|a| !a.write) {
        let states = candidates(&model.history, a.start, a.end);
        if let Err(cause) = a.result {
            if !fault_allowed(model, states, a, cause, armed) {
                violations.push(describe(model, a, states, "a fault no state allows"));
            }
            continue;
        }
        let cells: Vec<u32> = states
            .iter()
            .filter_map(|s| s.slots[a.page as usize])
            .filter(|s| s.prot.read || s.prot.write)
            .map(|s| s.cell)
            .filter(|&c| model.kinds[c as usize] != Kind::PastEnd)
            .collect();
        if cells.is_empty() {
            violations.push(describe(
                model,
                a,
                states,
                "a load succeeded where no state allows it",
            ));
            continue;
        }
        if cells
            .iter()
            .any(|&c| model.kinds[c as usize] == Kind::Unknown || explains(model, c, a))
        {
            continue;
        }
        let mut v = describe(
            model,
            a,
            states,
            "a value that no store, initial content or reset explains",
        );
        v.push_str(&where_the_value_was(model, &cells, a));
        violations.push(v);
    }
    violations.extend(fork::judge_children(model, armed));
    violations
}

/// For a load whose value nothing explains: where the value was an event of
/// the candidate cells, and which definite stores superseded it (a lost
/// write shows as the store that should have been read).
fn where_the_value_was(model: &Model, cells: &[u32], a: &Access) -> String {
    let mut cells = cells.to_vec();
    cells.sort_unstable();
    cells.dedup();
    let mut parts = Vec::new();
    for c in cells {
        let Some(evs) = model.events.get(&c) else {
            continue;
        };
        for x in evs.iter().filter(|x| x.value == a.value) {
            let by: Vec<String> = evs
                .iter()
                .filter(|y| y.definite && y.start > x.end && y.end < a.start)
                .take(3)
                .map(|y| format!("{} during [{}, {}]", value_name(y.value), y.start, y.end))
                .collect();
            parts.push(if by.is_empty() {
                format!(
                    "cell {c} got it during [{}, {}], after the load",
                    x.start, x.end
                )
            } else {
                format!(
                    "cell {c} got it during [{}, {}], superseded by {}",
                    x.start,
                    x.end,
                    by.join(", ")
                )
            });
        }
    }
    if parts.is_empty() {
        // Where it went instead (a store through a stale translation lands
        // in another cell than the model's).
        let elsewhere: Vec<String> = model
            .events
            .iter()
            .flat_map(|(c, evs)| evs.iter().map(move |x| (c, x)))
            .filter(|(_, x)| x.value == a.value)
            .take(3)
            .map(|(c, x)| {
                format!(
                    "cell {c} ({:?}) during [{}, {}]",
                    model.kinds[*c as usize], x.start, x.end
                )
            })
            .collect();
        if elsewhere.is_empty() {
            "; no cell ever got it".to_string()
        } else {
            format!(
                "; no candidate cell got it, the model put it in {}",
                elsewhere.join(", ")
            )
        }
    } else {
        format!("; {}", parts.join("; "))
    }
}

/// The states an access during `[start, end]` may have seen: those made
/// before it ended and not replaced before it began.
pub(super) fn candidates(history: &[StateRec], start: u64, end: u64) -> &[StateRec] {
    let first = history[1..].partition_point(|s| s.end < start);
    let last = history.partition_point(|s| s.start < end).max(1);
    &history[first.min(last - 1)..last]
}

pub(super) fn explains(model: &Model, cell: u32, a: &Access) -> bool {
    let Some(evs) = model.events.get(&cell) else {
        return false;
    };
    evs.iter()
        .take_while(|x| x.start < a.end)
        .any(|x| x.value == a.value && !superseded(evs, x, a.start))
}

pub(super) fn fault_allowed(
    model: &Model,
    states: &[StateRec],
    a: &Access,
    cause: FaultCause,
    armed: Armed,
) -> bool {
    match cause {
        FaultCause::OutOfMemory => return armed.alloc,
        FaultCause::Io => return armed.read,
        FaultCause::NoMapping | FaultCause::Protection | FaultCause::PastEnd => {}
    }
    states
        .iter()
        .any(|s| match (s.slots[a.page as usize], cause) {
            (None, FaultCause::NoMapping) => true,
            (Some(slot), FaultCause::Protection) => {
                if a.write {
                    !slot.prot.write
                } else {
                    !slot.prot.read && !slot.prot.write
                }
            }
            (Some(slot), FaultCause::PastEnd) => {
                matches!(
                    model.kinds[slot.cell as usize],
                    Kind::PastEnd | Kind::Unknown
                )
            }
            _ => false,
        })
}

pub(super) fn describe(model: &Model, a: &Access, states: &[StateRec], what: &str) -> String {
    let seen: Vec<String> = states
        .iter()
        .map(|s| match s.slots[a.page as usize] {
            None => "unmapped".to_string(),
            Some(slot) => format!(
                "cell {} {:?} {}",
                slot.cell,
                model.kinds[slot.cell as usize],
                prot_name(slot.prot)
            ),
        })
        .collect();
    format!(
        "{what}: {} of page {} ({:#x}) {} during [{}, {}], states then: [{}]",
        if a.write { "store" } else { "load" },
        a.page,
        BASE + a.page * PAGE_SIZE,
        match a.result {
            Ok(()) => format!("= {}", value_name(a.value)),
            Err(c) => format!("-> {c:?} (value {})", value_name(a.value)),
        },
        a.start,
        a.end,
        seen.join("; ")
    )
}

pub(super) fn cause_index(c: FaultCause) -> usize {
    match c {
        FaultCause::NoMapping => 0,
        FaultCause::Protection => 1,
        FaultCause::PastEnd => 2,
        FaultCause::Io => 3,
        FaultCause::OutOfMemory => 4,
    }
}

pub(super) fn prot_name(p: Prot) -> &'static str {
    match (p.read, p.write) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "none",
    }
}

pub(super) fn value_name(v: u64) -> String {
    match v >> 56 {
        0xA5 => format!("store {}#{}", (v >> 40) & 0xffff, v & 0xff_ffff_ffff),
        0xC4 => format!("child store {}#{}", (v >> 40) & 0xffff, v & 0xff_ffff_ffff),
        0xF1 => format!("file {} page {}", (v >> 32) & 0xff, v & 0xffff_ffff),
        _ if v == 0 => "0".to_string(),
        _ => format!("{v:#x}"),
    }
}
