//! The vmspace backend of vmscript: runs a script on a fresh
//! `vmspace::AddressSpace`, as `host` runs it on the Linux kernel.
//!
//! The window starts at [`WINDOW_BASE`]; the eight files are `vmspace::File`s
//! over in-memory stores holding the vmscript content. Frames come from one
//! arena shared by every script of a run (`Backend::new` makes it once).

use crate::script::{self, Backing, Op, Outcome, Sharing};
use std::sync::Arc;
use vmspace::{
    AddressSpace, Config, Errno, FrameAllocator, MapFlags, MapSource, MemoryStore, Prot,
    RemapFlags, Strategy,
};

/// Where page 0 of the window lives in the address space.
pub const WINDOW_BASE: u64 = 0x7000_0000_0000;

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

/// One script's address space, files and `Cpu`.
struct Exec {
    space: Arc<AddressSpace>,
    cpu: vmspace::Cpu,
    files: Vec<Option<Arc<vmspace::File>>>,
    frames: Arc<FrameAllocator>,
}

fn addr(page: u64) -> u64 {
    WINDOW_BASE + page * script::PAGE
}

fn prot(p: script::Prot) -> Prot {
    Prot::new(p.read, p.write, p.exec)
}

fn outcome(r: Result<impl Sized, Errno>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err(e.code()),
    }
}

fn access<T>(r: Result<T, vmspace::Fault>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(f) if f.is_bus_error() => Outcome::Sigbus,
        Err(_) => Outcome::Segv,
    }
}

impl Exec {
    fn new(frames: Arc<FrameAllocator>, strategy: Strategy) -> Exec {
        let config = Config {
            strategy,
            ..Config::default()
        };
        let space = AddressSpace::new(config, frames.clone());
        let cpu = space.cpu();
        Exec {
            space,
            cpu,
            files: vec![None; script::FILE_COUNT as usize + 1],
            frames,
        }
    }

    /// File `id`, created with the vmscript content on first use.
    fn file(&mut self, id: u8) -> Arc<vmspace::File> {
        let frames = self.frames.clone();
        self.files[id as usize]
            .get_or_insert_with(|| {
                let store = MemoryStore::new(script::FILE_PAGES, |p, page| {
                    page[0] = script::file_byte(id, p)
                });
                Arc::new(vmspace::File::new(
                    script::FILE_PAGES,
                    Box::new(store),
                    frames,
                ))
            })
            .clone()
    }

    fn file_id(&self, f: &Arc<vmspace::File>) -> u8 {
        self.files
            .iter()
            .position(|x| x.as_ref().is_some_and(|x| Arc::ptr_eq(x, f)))
            .unwrap_or(0) as u8
    }

    fn maps(&self) -> Outcome {
        let end = addr(script::WINDOW_PAGES);
        let entries = self
            .space
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
                        id: self.file_id(f),
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
        let pages = |n: u64| n * script::PAGE;
        match *op {
            Op::Mmap {
                page,
                npages,
                prot: p,
                backing,
                sharing,
            } => {
                let source = match backing {
                    Backing::Anon => MapSource::Anon,
                    Backing::File { id, pgoff } => MapSource::File {
                        file: self.file(id),
                        pgoff,
                    },
                };
                let flags = MapFlags {
                    shared: sharing == Sharing::Shared,
                    fixed: true,
                    ..MapFlags::default()
                };
                outcome(
                    self.space
                        .mmap(addr(page), pages(npages), prot(p), flags, source),
                )
            }
            Op::Munmap { page, npages } => outcome(self.space.munmap(addr(page), pages(npages))),
            Op::Mprotect {
                page,
                npages,
                prot: p,
            } => outcome(self.space.mprotect(addr(page), pages(npages), prot(p))),
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
                outcome(
                    self.space
                        .mremap(addr(page), pages(old_npages), pages(new_npages), flags),
                )
            }
            Op::MadviseDontneed { page, npages } => {
                outcome(self.space.madvise_dontneed(addr(page), pages(npages)))
            }
            Op::Write { page, value } => {
                access(self.cpu.write_u8(addr(page), value), |_| Outcome::Ok)
            }
            Op::Read { page } => access(self.cpu.read_u8(addr(page)), Outcome::Value),
            Op::Maps => self.maps(),
        }
    }
}
