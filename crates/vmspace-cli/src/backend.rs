//! The vmspace backend of vmscript: applies script ops to a
//! `vmspace::AddressSpace`, as `host` applies them to the Linux kernel.
//!
//! [`apply`] is the one place that turns a mapping op (`mmap`, `munmap`,
//! `mprotect`, `mremap`, `madvise`) into its vmspace call. `replay` reaches it
//! through [`Runner`], whose scripts also load and store bytes through a
//! `Cpu`; `torture` calls it with its own files ([`FileTable`]) and does its
//! own word-sized loads and stores, which its checker needs to tell stores
//! apart. [`Placement`] and [`msync`] are the calls torture makes that
//! vmscript does not spell.
//!
//! The window starts at [`WINDOW_BASE`]. A script's eight files are
//! `vmspace::File`s over in-memory stores holding the vmscript content, made on
//! first use. Frames come from one arena shared by every script of a run
//! (`Runner::new` makes it once).

use crate::script::{self, Backing, Op, Outcome, Sharing};
use std::sync::{Arc, OnceLock};
use vmspace::{
    AddressSpace, Advice, Config, Errno, File, FrameAllocator, MapFlags, MapSource, MemoryStore,
    Prot, RemapFlags, Strategy,
};

/// Where page 0 of the window lives in the address space.
pub const WINDOW_BASE: u64 = 0x7000_0000_0000;

/// The address of window page `page`.
pub fn addr(page: u64) -> u64 {
    WINDOW_BASE + page * script::PAGE
}

/// The files an op's `file:ID` names.
pub trait FileTable {
    /// File `id`, or `None` when the table has no such file.
    fn file(&self, id: u8) -> Option<Arc<File>>;
}

/// How `mmap` treats what its range already holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// `MAP_FIXED`: replaces it (the only placement vmscript's `mmap` has).
    #[default]
    Replace,
    /// `MAP_FIXED_NOREPLACE`: fails with `EEXIST` if anything is mapped there.
    NoReplace,
}

/// Applies mapping op `op` to `space`, `mmap` placed by `placement`, and
/// returns what the call returned: the address of the mapping for `mmap`
/// and `mremap`, 0 for the others. A `file:ID` that `files` does not have
/// fails with `EINVAL`. `None` when `op` is not a mapping op (`read`,
/// `write`, `maps`).
pub fn apply(
    space: &AddressSpace,
    files: &impl FileTable,
    op: &Op,
    placement: Placement,
) -> Option<Result<u64, Errno>> {
    let bytes = |npages: u64| npages * script::PAGE;
    let done = |r: Result<(), Errno>| r.map(|()| 0);
    let result = match *op {
        Op::Mmap {
            page,
            npages,
            prot: p,
            backing,
            sharing,
            flags: extra,
        } => {
            let source = match backing {
                Backing::Anon => MapSource::Anon,
                Backing::File { id, pgoff } => match files.file(id) {
                    Some(file) => MapSource::File { file, pgoff },
                    None => return Some(Err(Errno::EINVAL)),
                },
            };
            let flags = MapFlags {
                shared: sharing == Sharing::Shared,
                fixed: placement == Placement::Replace,
                fixed_noreplace: placement == Placement::NoReplace,
                noreserve: extra.noreserve,
                stack: extra.stack,
                ..MapFlags::default()
            };
            space.mmap(addr(page), bytes(npages), prot(p), flags, source)
        }
        Op::Munmap { page, npages } => done(space.munmap(addr(page), bytes(npages))),
        Op::Mlock {
            page,
            npages,
            onfault,
        } => done(space.mlock(addr(page), bytes(npages), onfault)),
        Op::Munlock { page, npages } => done(space.munlock(addr(page), bytes(npages))),
        Op::Mprotect {
            page,
            npages,
            prot: p,
        } => done(space.mprotect(addr(page), bytes(npages), prot(p))),
        Op::Mremap {
            page,
            old_npages,
            new_npages,
            new_page,
        } => {
            let flags = RemapFlags {
                may_move: new_page.is_some(),
                fixed: new_page.map(addr),
            };
            space.mremap(addr(page), bytes(old_npages), bytes(new_npages), flags)
        }
        Op::MadviseDontneed { page, npages } => {
            done(space.madvise_dontneed(addr(page), bytes(npages)))
        }
        Op::Madvise {
            page,
            npages,
            advice,
        } => done(space.madvise(addr(page), bytes(npages), self::advice(advice))),
        Op::Write { .. } | Op::Read { .. } | Op::Maps | Op::Fork | Op::Side(_) => return None,
    };
    Some(result)
}

/// The library's advice for a script's.
fn advice(advice: script::Advice) -> Advice {
    match advice {
        script::Advice::Free => Advice::Free,
        script::Advice::Dontfork => Advice::DontFork,
        script::Advice::Dofork => Advice::DoFork,
        script::Advice::Wipeonfork => Advice::WipeOnFork,
        script::Advice::Keeponfork => Advice::KeepOnFork,
        script::Advice::PopulateRead => Advice::PopulateRead,
        script::Advice::PopulateWrite => Advice::PopulateWrite,
    }
}

/// `msync(MS_SYNC)` of window pages `page .. page + npages`.
pub fn msync(space: &AddressSpace, page: u64, npages: u64) -> Result<(), Errno> {
    space.msync(addr(page), npages * script::PAGE)
}

/// A reusable runner: one frame arena for many scripts.
pub struct Runner {
    frames: Arc<FrameAllocator>,
    strategy: Strategy,
}

impl Runner {
    /// A runner whose address spaces use `strategy`, with an arena big enough
    /// for a script that touches every page of the window.
    pub fn new(strategy: Strategy) -> Result<Runner, vmspace::ArenaError> {
        let bytes = (script::WINDOW_PAGES + 8 * script::FILE_PAGES + 1024) * script::PAGE;
        Ok(Runner {
            frames: Arc::new(FrameAllocator::new(bytes)?),
            strategy,
        })
    }

    /// Runs one script and returns its output lines.
    pub fn run(&self, ops: &[Op]) -> Vec<String> {
        let mut exec = Exec::new(self.frames.clone(), self.strategy);
        script::run(ops, &mut exec)
    }
}

/// A script's files `1..=FILE_COUNT`, each made with the vmscript content
/// on first use.
struct ScriptFiles {
    files: Vec<OnceLock<Arc<File>>>,
    frames: Arc<FrameAllocator>,
}

impl FileTable for ScriptFiles {
    fn file(&self, id: u8) -> Option<Arc<File>> {
        let slot = self.files.get(usize::from(id).checked_sub(1)?)?;
        let file = slot.get_or_init(|| {
            let store = MemoryStore::new(script::FILE_PAGES, |p, page| {
                page[0] = script::file_byte(id, p)
            });
            File::new(script::FILE_PAGES, Box::new(store), self.frames.clone())
        });
        Some(file.clone())
    }
}

impl ScriptFiles {
    /// The id of `file`, or 0 for a file that is not one of the script's.
    fn id_of(&self, file: &Arc<File>) -> u8 {
        self.files
            .iter()
            .position(|x| x.get().is_some_and(|x| Arc::ptr_eq(x, file)))
            .map_or(0, |i| i as u8 + 1)
    }
}

/// One script's address spaces (the parent's, and the child's after a
/// `fork`), their `Cpu`s, the side the script runs on, and its files.
struct Exec {
    space: Arc<AddressSpace>,
    cpu: vmspace::Cpu,
    child: Option<(Arc<AddressSpace>, vmspace::Cpu)>,
    side: script::Side,
    files: ScriptFiles,
}

fn prot(p: script::Prot) -> Prot {
    Prot::new(p.read, p.write, p.exec)
}

fn outcome(r: Result<u64, Errno>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err(e.code()),
    }
}

fn access<T>(r: Result<T, vmspace::Fault>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(f) => Outcome::of_fault(f.cause),
    }
}

impl Exec {
    fn new(frames: Arc<FrameAllocator>, strategy: Strategy) -> Exec {
        // Execute-only keys as the host has them: the host kernel is the
        // oracle these scripts are compared with.
        let config = Config {
            strategy,
            exec_only_pkey: crate::host::host_has_pkeys(),
            ..Config::default()
        };
        let space =
            AddressSpace::new(config, frames.clone()).expect("a default configuration is valid");
        let cpu = space.cpu();
        Exec {
            space,
            cpu,
            child: None,
            side: script::Side::Parent,
            files: ScriptFiles {
                files: (0..script::FILE_COUNT).map(|_| OnceLock::new()).collect(),
                frames,
            },
        }
    }

    /// The address space and `Cpu` of the side the script runs on.
    fn current(&mut self) -> (&Arc<AddressSpace>, &mut vmspace::Cpu) {
        match (&mut self.child, self.side) {
            (Some((space, cpu)), script::Side::Child) => (space, cpu),
            _ => (&self.space, &mut self.cpu),
        }
    }

    /// `fork`: the parent's space forks; the script stays on the parent.
    fn fork(&mut self) -> Outcome {
        let child = self.space.fork();
        let cpu = child.cpu();
        self.child = Some((child, cpu));
        Outcome::Ok
    }

    fn maps(&mut self) -> Outcome {
        let end = addr(script::WINDOW_PAGES);
        let space = self.current().0.clone();
        let entries = space
            .maps()
            .into_iter()
            .filter(|m| m.end > WINDOW_BASE && m.start < end)
            .map(|m| script::MapEntry {
                start: (m.start.max(WINDOW_BASE) - WINDOW_BASE) / script::PAGE,
                end: (m.end.min(end) - WINDOW_BASE) / script::PAGE,
                prot: script::Prot {
                    read: m.prot.read,
                    write: m.prot.write,
                    exec: m.prot.exec,
                },
                shared: m.shared,
                backing: match &m.file {
                    Some(f) => Backing::File {
                        id: self.files.id_of(f),
                        pgoff: m.pgoff,
                    },
                    None => Backing::Anon,
                },
            })
            .collect();
        Outcome::Maps(entries)
    }
}

impl script::Backend for Exec {
    fn exec(&mut self, op: &Op) -> Outcome {
        let space = self.current().0.clone();
        if let Some(result) = apply(&space, &self.files, op, Placement::Replace) {
            return outcome(result);
        }
        match *op {
            Op::Write { page, value } => {
                access(self.current().1.write_u8(addr(page), value), |_| {
                    Outcome::Ok
                })
            }
            Op::Read { page } => access(self.current().1.read_u8(addr(page)), Outcome::Value),
            Op::Maps => self.maps(),
            Op::Fork => self.fork(),
            Op::Side(side) => {
                self.side = side;
                Outcome::Side(side)
            }
            _ => unreachable!("apply handles every mapping op"),
        }
    }
}
