//! vmscript: the operation types, the parser, the result lines and the
//! backend-independent runner (see `docs/vmscript.md` for the language).
//!
//! This module owns everything about the *text* of vmscript: what a
//! well-formed line is, how much input a script may be ([`MAX_LINE_BYTES`],
//! [`MAX_SCRIPT_BYTES`]), how an [`Op`] prints back as script text, and how
//! an [`Outcome`] prints as a result line. Backends (the host kernel, the
//! vmspace library) only implement [`Backend::exec`].
//!
//! Error messages quote at most [`QUOTE_CHARS`] characters of the input, so
//! a huge bad word never floods the terminal.

use std::fmt;
use std::io::{self, BufRead, Read};

/// The size of a page in bytes.
pub const PAGE: u64 = 4096;
/// The number of pages of the window scripts run in (256 MiB).
pub const WINDOW_PAGES: u64 = 65536;
/// The number of pages of each of the files `1..=8`.
pub const FILE_PAGES: u64 = 1024;
/// The number of files a script may map (`file:1:..` to `file:8:..`).
pub const FILE_COUNT: u8 = 8;
/// The largest well-formed `PGOFF`: the byte offset `PGOFF * PAGE` must fit
/// in an `off_t` (`i64`) so it can be handed to `mmap` unchanged.
pub const MAX_PGOFF: u64 = i64::MAX as u64 / PAGE;

/// The longest line a script may have: bytes before its `\n` (a `\r` of a
/// `\r\n` ending counts). A longer line is malformed.
pub const MAX_LINE_BYTES: usize = 4096;
/// The longest script, in bytes. A longer one is malformed.
pub const MAX_SCRIPT_BYTES: u64 = 64 << 20;
/// The most characters of the input an error message quotes.
pub const QUOTE_CHARS: usize = 80;

/// An errno value, as Linux numbers it.
pub type Errno = i32;

/// The byte at offset 0 of page `page` of file `id`; every other byte is 0.
pub fn file_byte(id: u8, page: u64) -> u8 {
    ((id as u64 * 37 + page) % 251) as u8
}

/// A protection: which of read, write and execute are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    /// `r`: loads are allowed.
    pub read: bool,
    /// `w`: stores are allowed.
    pub write: bool,
    /// `x`: instruction fetches are allowed.
    pub exec: bool,
}

impl Prot {
    /// No access at all (`---`).
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
        exec: false,
    };
    /// Read-only (`r--`).
    pub const READ: Prot = Prot {
        read: true,
        write: false,
        exec: false,
    };
    /// Read and write (`rw-`).
    pub const READ_WRITE: Prot = Prot {
        read: true,
        write: true,
        exec: false,
    };
}

impl fmt::Display for Prot {
    /// Three characters, as in a script and in `/proc/PID/maps`: `rw-`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, letter: char| if on { letter } else { '-' };
        write!(
            f,
            "{}{}{}",
            flag(self.read, 'r'),
            flag(self.write, 'w'),
            flag(self.exec, 'x')
        )
    }
}

/// What a mapping maps: zero-fill memory or a page range of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Anonymous (zero-filled) memory.
    Anon,
    /// File `id` (`1..=8`), starting at its page `pgoff`.
    File {
        /// The file, `1..=8`.
        id: u8,
        /// The file page mapped at the mapping's first page.
        pgoff: u64,
    },
}

impl fmt::Display for Backing {
    /// `anon` or `file:ID:PGOFF`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Anon => f.write_str("anon"),
            Backing::File { id, pgoff } => write!(f, "file:{id}:{pgoff}"),
        }
    }
}

/// `MAP_PRIVATE` or `MAP_SHARED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// `MAP_PRIVATE`: stores are copy-on-write.
    Private,
    /// `MAP_SHARED`: stores reach the backing object.
    Shared,
}

impl fmt::Display for Sharing {
    /// `private` or `shared`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sharing::Private => "private",
            Sharing::Shared => "shared",
        })
    }
}

/// One operation of a script. Pages are relative to the window base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `mmap PAGE NPAGES PROT BACKING SHARING` (always `MAP_FIXED`).
    Mmap {
        /// First page.
        page: u64,
        /// Length in pages (may be 0).
        npages: u64,
        /// Protection.
        prot: Prot,
        /// Anonymous or file memory.
        backing: Backing,
        /// Private or shared.
        sharing: Sharing,
        /// `noreserve` and `stack`, the optional words after SHARING.
        flags: MmapFlags,
    },
    /// `mlock PAGE NPAGES [onfault]`: `mlock2(..., MLOCK_ONFAULT or 0)`.
    Mlock {
        /// First page.
        page: u64,
        /// Length in pages (may be 0).
        npages: u64,
        /// `MLOCK_ONFAULT`: lock without populating.
        onfault: bool,
    },
    /// `munlock PAGE NPAGES`.
    Munlock {
        /// First page.
        page: u64,
        /// Length in pages (may be 0).
        npages: u64,
    },
    /// `munmap PAGE NPAGES`.
    Munmap {
        /// First page.
        page: u64,
        /// Length in pages (may be 0).
        npages: u64,
    },
    /// `mprotect PAGE NPAGES PROT`.
    Mprotect {
        /// First page.
        page: u64,
        /// Length in pages (may be 0).
        npages: u64,
        /// New protection.
        prot: Prot,
    },
    /// `mremap PAGE OLD_NPAGES NEW_NPAGES [NEW_PAGE]`: in place when
    /// `new_page` is `None`, else `MREMAP_MAYMOVE | MREMAP_FIXED`.
    Mremap {
        /// First page of the old range.
        page: u64,
        /// Length of the old range in pages.
        old_npages: u64,
        /// Length of the new range in pages.
        new_npages: u64,
        /// First page of the new range, for a move.
        new_page: Option<u64>,
    },
    /// `madvise PAGE NPAGES dontneed` (`MADV_DONTNEED`).
    MadviseDontneed {
        /// First page.
        page: u64,
        /// Length in pages (may be 0).
        npages: u64,
    },
    /// `write PAGE VALUE`: store VALUE at byte 0 of PAGE.
    Write {
        /// The page written.
        page: u64,
        /// The byte stored.
        value: u8,
    },
    /// `read PAGE`: load byte 0 of PAGE.
    Read {
        /// The page read.
        page: u64,
    },
    /// `maps`: list the mappings inside the window.
    Maps,
    /// `madvise PAGE NPAGES ADVICE` for an advice other than `dontneed`.
    Madvise {
        /// First page.
        page: u64,
        /// Length in pages (may be 0).
        npages: u64,
        /// The advice.
        advice: Advice,
    },
    /// `fork`: the address space forks (the host process calls `fork(2)`);
    /// the lines after it still run in the parent until a `child` line.
    Fork,
    /// `child` or `parent`: the lines after it run on that side of the fork.
    Side(Side),
}

/// The optional flags of `mmap`: the words `noreserve` and `stack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapFlags {
    /// `noreserve`: `MAP_NORESERVE`.
    pub noreserve: bool,
    /// `stack`: `MAP_STACK`.
    pub stack: bool,
}

impl fmt::Display for MmapFlags {
    /// ` noreserve` and/or ` stack` (each with its leading space), or nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.noreserve {
            f.write_str(" noreserve")?;
        }
        if self.stack {
            f.write_str(" stack")?;
        }
        Ok(())
    }
}

/// The `madvise` advices besides `dontneed` (`MADV_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Advice {
    /// `free`: `MADV_FREE`.
    Free,
    /// `dontfork`: `MADV_DONTFORK`.
    Dontfork,
    /// `dofork`: `MADV_DOFORK`.
    Dofork,
    /// `wipeonfork`: `MADV_WIPEONFORK`.
    Wipeonfork,
    /// `keeponfork`: `MADV_KEEPONFORK`.
    Keeponfork,
    /// `populate_read`: `MADV_POPULATE_READ`.
    PopulateRead,
    /// `populate_write`: `MADV_POPULATE_WRITE`.
    PopulateWrite,
}

impl Advice {
    /// Every advice, in the order the spec lists them.
    pub const ALL: [Advice; 7] = [
        Advice::Free,
        Advice::Dontfork,
        Advice::Dofork,
        Advice::Wipeonfork,
        Advice::Keeponfork,
        Advice::PopulateRead,
        Advice::PopulateWrite,
    ];

    /// The word of a script line.
    pub fn name(self) -> &'static str {
        match self {
            Advice::Free => "free",
            Advice::Dontfork => "dontfork",
            Advice::Dofork => "dofork",
            Advice::Wipeonfork => "wipeonfork",
            Advice::Keeponfork => "keeponfork",
            Advice::PopulateRead => "populate_read",
            Advice::PopulateWrite => "populate_write",
        }
    }
}

/// The side of a fork that a script's lines run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The process (address space) that called `fork`.
    Parent,
    /// The process (address space) `fork` created.
    Child,
}

impl fmt::Display for Side {
    /// `parent` or `child`: the line that selects the side, and its result.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Parent => "parent",
            Side::Child => "child",
        })
    }
}

impl fmt::Display for Op {
    /// The op as one script line (without newline); [`parse`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Mmap {
                page,
                npages,
                prot,
                backing,
                sharing,
                flags,
            } => {
                write!(f, "mmap {page} {npages} {prot} {backing} {sharing}{flags}")
            }
            Op::Mlock {
                page,
                npages,
                onfault,
            } => {
                write!(f, "mlock {page} {npages}")?;
                if *onfault {
                    f.write_str(" onfault")?;
                }
                Ok(())
            }
            Op::Munlock { page, npages } => write!(f, "munlock {page} {npages}"),
            Op::Munmap { page, npages } => write!(f, "munmap {page} {npages}"),
            Op::Mprotect { page, npages, prot } => write!(f, "mprotect {page} {npages} {prot}"),
            Op::Mremap {
                page,
                old_npages,
                new_npages,
                new_page,
            } => {
                write!(f, "mremap {page} {old_npages} {new_npages}")?;
                match new_page {
                    Some(new_page) => write!(f, " {new_page}"),
                    None => Ok(()),
                }
            }
            Op::MadviseDontneed { page, npages } => write!(f, "madvise {page} {npages} dontneed"),
            Op::Write { page, value } => write!(f, "write {page} {value}"),
            Op::Read { page } => write!(f, "read {page}"),
            Op::Maps => f.write_str("maps"),
            Op::Madvise {
                page,
                npages,
                advice,
            } => write!(f, "madvise {page} {npages} {}", advice.name()),
            Op::Fork => f.write_str("fork"),
            Op::Side(side) => side.fmt(f),
        }
    }
}

/// Why a script is malformed: the first bad line (numbered from 1, counting
/// blank and comment lines) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with the line.
    pub message: String,
}

impl fmt::Display for ParseError {
    /// `line N: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Why a script could not be loaded: its input failed, or it is malformed.
#[derive(Debug)]
pub enum ReadError {
    /// Reading the input failed.
    Io(io::Error),
    /// The script is malformed (this includes a line or a script over the
    /// size limits).
    Malformed(ParseError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(error) => error.fmt(f),
            ReadError::Malformed(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

/// Parses a whole script, checking every line before returning.
///
/// Lines end with `\n` (a `\r\n` ending is accepted too). A line whose first
/// word starts with `#`, or that has no words, is skipped. A line over
/// [`MAX_LINE_BYTES`] or a script over [`MAX_SCRIPT_BYTES`] is malformed.
/// Never panics.
pub fn parse(text: &str) -> Result<Vec<Op>, ParseError> {
    match read(text.as_bytes()) {
        Ok(ops) => Ok(ops),
        Err(ReadError::Malformed(error)) => Err(error),
        Err(ReadError::Io(error)) => unreachable!("reading a byte slice failed: {error}"),
    }
}

/// Reads and parses a script from `input`, as [`parse`] does, holding at
/// most one line of [`MAX_LINE_BYTES`] in memory: an endless line (such as
/// `/dev/zero`) is refused as soon as it passes the limit, and reading stops
/// at the first malformed line.
pub fn read(mut input: impl BufRead) -> Result<Vec<Op>, ReadError> {
    let malformed = |line, message| ReadError::Malformed(ParseError { line, message });
    let mut ops = Vec::new();
    let mut bytes = Vec::new();
    let (mut line, mut total) = (0, 0u64);
    let mut forked = false;
    loop {
        bytes.clear();
        let n = input
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut bytes)
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(ops);
        }
        line += 1;
        total += n as u64;
        if total > MAX_SCRIPT_BYTES {
            let message = format!("the script is longer than {MAX_SCRIPT_BYTES} bytes");
            return Err(malformed(line, message));
        }
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        } else if n > MAX_LINE_BYTES {
            let message = format!("the line is longer than {MAX_LINE_BYTES} bytes");
            return Err(malformed(line, message));
        }
        match parse_line(&String::from_utf8_lossy(&bytes)) {
            Ok(Some(op)) => {
                if let Err(message) = check_fork_order(&op, &mut forked) {
                    return Err(malformed(line, message));
                }
                ops.push(op)
            }
            Ok(None) => {}
            Err(message) => return Err(malformed(line, message)),
        }
    }
}

/// A script forks at most once, and selects a side only after its `fork`.
fn check_fork_order(op: &Op, forked: &mut bool) -> Result<(), String> {
    match op {
        Op::Fork if *forked => Err("a script forks at most once".to_owned()),
        Op::Fork => {
            *forked = true;
            Ok(())
        }
        Op::Side(side) if !*forked => Err(format!("`{side}` before the script's `fork`")),
        _ => Ok(()),
    }
}

/// `word` between backquotes for an error message, cut to [`QUOTE_CHARS`]
/// characters (then followed by `...` and its length in bytes).
fn quote(word: &str) -> String {
    match word.char_indices().nth(QUOTE_CHARS) {
        None => format!("`{word}`"),
        Some((cut, _)) => format!("`{}...` ({} bytes)", &word[..cut], word.len()),
    }
}

/// Parses one line: `Ok(None)` for a blank or comment line.
fn parse_line(line: &str) -> Result<Option<Op>, String> {
    let words: Vec<&str> = line
        .split([' ', '\t'])
        .filter(|word| !word.is_empty())
        .collect();
    let Some((&name, args)) = words.split_first() else {
        return Ok(None);
    };
    if name.starts_with('#') {
        return Ok(None);
    }
    let op = match name {
        "mmap" => parse_mmap(args)?,
        "munmap" => parse_munmap(args)?,
        "mlock" => parse_mlock(args)?,
        "munlock" => {
            let [page, npages] = arity(args, "munlock PAGE NPAGES")?;
            let (page, npages) = page_range(page, npages)?;
            Op::Munlock { page, npages }
        }
        "mprotect" => parse_mprotect(args)?,
        "mremap" => parse_mremap(args)?,
        "madvise" => parse_madvise(args)?,
        "write" => parse_write(args)?,
        "read" => parse_read(args)?,
        "maps" => {
            let [] = arity::<0>(args, "maps")?;
            Op::Maps
        }
        "fork" => {
            let [] = arity::<0>(args, "fork")?;
            Op::Fork
        }
        "child" => {
            let [] = arity::<0>(args, "child")?;
            Op::Side(Side::Child)
        }
        "parent" => {
            let [] = arity::<0>(args, "parent")?;
            Op::Side(Side::Parent)
        }
        _ => return Err(format!("unknown operation {}", quote(name))),
    };
    Ok(Some(op))
}

fn parse_mmap(args: &[&str]) -> Result<Op, String> {
    let usage = "mmap PAGE NPAGES PROT BACKING SHARING [noreserve] [stack]";
    let (args, extra) = args.split_at(args.len().min(5));
    let [page, npages, prot, backing, sharing] = arity(args, usage)?;
    let (page, npages) = page_range(page, npages)?;
    let mut flags = MmapFlags::default();
    for &word in extra {
        let flag = match word {
            "noreserve" => &mut flags.noreserve,
            "stack" => &mut flags.stack,
            _ => {
                return Err(format!(
                    "mmap flag {} is neither `noreserve` nor `stack`",
                    quote(word)
                ))
            }
        };
        if *flag {
            return Err(format!("mmap flag `{word}` appears twice"));
        }
        *flag = true;
    }
    Ok(Op::Mmap {
        page,
        npages,
        prot: parse_prot(prot)?,
        backing: parse_backing(backing)?,
        sharing: parse_sharing(sharing)?,
        flags,
    })
}

fn parse_mlock(args: &[&str]) -> Result<Op, String> {
    let (page, npages, onfault) = match *args {
        [page, npages] => (page, npages, false),
        [page, npages, "onfault"] => (page, npages, true),
        [_, _, word] => return Err(format!("mlock flag {} is not `onfault`", quote(word))),
        _ => {
            return Err(format!(
                "`mlock PAGE NPAGES [onfault]` takes 2 or 3 arguments, found {}",
                args.len()
            ))
        }
    };
    let (page, npages) = page_range(page, npages)?;
    Ok(Op::Mlock {
        page,
        npages,
        onfault,
    })
}

fn parse_munmap(args: &[&str]) -> Result<Op, String> {
    let [page, npages] = arity(args, "munmap PAGE NPAGES")?;
    let (page, npages) = page_range(page, npages)?;
    Ok(Op::Munmap { page, npages })
}

fn parse_mprotect(args: &[&str]) -> Result<Op, String> {
    let [page, npages, prot] = arity(args, "mprotect PAGE NPAGES PROT")?;
    let (page, npages) = page_range(page, npages)?;
    Ok(Op::Mprotect {
        page,
        npages,
        prot: parse_prot(prot)?,
    })
}

fn parse_mremap(args: &[&str]) -> Result<Op, String> {
    let (page, old_npages, new_npages, new_page) = match *args {
        [page, old, new] => (page, old, new, None),
        [page, old, new, new_page] => (page, old, new, Some(new_page)),
        _ => {
            return Err(format!(
                "`mremap PAGE OLD_NPAGES NEW_NPAGES [NEW_PAGE]` takes 3 or 4 arguments, found {}",
                args.len()
            ))
        }
    };
    let (page, old_npages) = page_range(page, old_npages)?;
    let new_npages = number("NEW_NPAGES", new_npages)?;
    let new_page = new_page.map(|word| number("NEW_PAGE", word)).transpose()?;
    check_range(new_page.unwrap_or(page), new_npages)?;
    Ok(Op::Mremap {
        page,
        old_npages,
        new_npages,
        new_page,
    })
}

fn parse_madvise(args: &[&str]) -> Result<Op, String> {
    let [page, npages, advice] = arity(args, "madvise PAGE NPAGES ADVICE")?;
    let (page, npages) = page_range(page, npages)?;
    if advice == "dontneed" {
        return Ok(Op::MadviseDontneed { page, npages });
    }
    match Advice::ALL.into_iter().find(|a| a.name() == advice) {
        Some(advice) => Ok(Op::Madvise {
            page,
            npages,
            advice,
        }),
        None => Err(format!(
            "advice {} is not one vmscript knows",
            quote(advice)
        )),
    }
}

fn parse_write(args: &[&str]) -> Result<Op, String> {
    let [page, value] = arity(args, "write PAGE VALUE")?;
    let page = single_page(page)?;
    let value = number("VALUE", value)?;
    let value = u8::try_from(value).map_err(|_| format!("VALUE {value} is out of range 0..255"))?;
    Ok(Op::Write { page, value })
}

fn parse_read(args: &[&str]) -> Result<Op, String> {
    let [page] = arity(args, "read PAGE")?;
    Ok(Op::Read {
        page: single_page(page)?,
    })
}

/// Checks the argument count against `usage` (the op's syntax, whose first
/// word is the op and whose other words are the `N` arguments).
fn arity<'a, const N: usize>(args: &[&'a str], usage: &str) -> Result<[&'a str; N], String> {
    <[&str; N]>::try_from(args).map_err(|_| {
        let name = usage.split(' ').next().unwrap_or(usage);
        format!(
            "`{usage}`: `{name}` takes {N} arguments, found {}",
            args.len()
        )
    })
}

/// A decimal number made of ASCII digits only, that fits in a `u64`.
fn number(what: &str, word: &str) -> Result<u64, String> {
    if !word.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("{what} {} is not a decimal number", quote(word)));
    }
    word.parse()
        .map_err(|_| format!("{what} {} is too large", quote(word)))
}

/// `PAGE NPAGES`, checked to stay inside the window.
fn page_range(page: &str, npages: &str) -> Result<(u64, u64), String> {
    let page = number("PAGE", page)?;
    let npages = number("NPAGES", npages)?;
    check_range(page, npages)?;
    Ok((page, npages))
}

/// `page .. page + npages` must lie inside `0 .. WINDOW_PAGES`.
fn check_range(page: u64, npages: u64) -> Result<(), String> {
    match page.checked_add(npages) {
        Some(end) if end <= WINDOW_PAGES => Ok(()),
        _ => Err(format!(
            "pages {page}+{npages} leave the window of {WINDOW_PAGES} pages"
        )),
    }
}

/// A page number for `read` and `write`: inside the window.
fn single_page(word: &str) -> Result<u64, String> {
    let page = number("PAGE", word)?;
    check_range(page, 1)?;
    Ok(page)
}

/// `PROT`: exactly `r` or `-`, then `w` or `-`, then `x` or `-`.
fn parse_prot(word: &str) -> Result<Prot, String> {
    let bad = || {
        format!(
            "PROT {} is not three characters `r|-` `w|-` `x|-`",
            quote(word)
        )
    };
    let [r, w, x] = <[u8; 3]>::try_from(word.as_bytes()).map_err(|_| bad())?;
    let flag = |byte: u8, letter: u8| match byte {
        b'-' => Ok(false),
        _ if byte == letter => Ok(true),
        _ => Err(bad()),
    };
    Ok(Prot {
        read: flag(r, b'r')?,
        write: flag(w, b'w')?,
        exec: flag(x, b'x')?,
    })
}

/// `BACKING`: `anon` or `file:ID:PGOFF`.
fn parse_backing(word: &str) -> Result<Backing, String> {
    if word == "anon" {
        return Ok(Backing::Anon);
    }
    let bad = || {
        format!(
            "BACKING {} is neither `anon` nor `file:ID:PGOFF`",
            quote(word)
        )
    };
    let rest = word.strip_prefix("file:").ok_or_else(bad)?;
    let (id, pgoff) = rest.split_once(':').ok_or_else(bad)?;
    let id = number("file ID", id)?;
    let id = match u8::try_from(id) {
        Ok(id @ 1..=FILE_COUNT) => id,
        _ => return Err(format!("file ID {id} is outside 1..{FILE_COUNT}")),
    };
    let pgoff = number("PGOFF", pgoff)?;
    if pgoff > MAX_PGOFF {
        return Err(format!("PGOFF {pgoff} is out of range 0..{MAX_PGOFF}"));
    }
    Ok(Backing::File { id, pgoff })
}

/// `SHARING`: `private` or `shared`.
fn parse_sharing(word: &str) -> Result<Sharing, String> {
    match word {
        "private" => Ok(Sharing::Private),
        "shared" => Ok(Sharing::Shared),
        _ => Err(format!(
            "SHARING {} is neither `private` nor `shared`",
            quote(word)
        )),
    }
}

/// One mapping of a `maps` result line, in window pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First page.
    pub start: u64,
    /// One past the last page.
    pub end: u64,
    /// Protection.
    pub prot: Prot,
    /// `MAP_SHARED` (the `s` of `rw-s`).
    pub shared: bool,
    /// Anonymous, or the file and its page mapped at `start`.
    pub backing: Backing,
}

impl fmt::Display for MapEntry {
    /// `START-END:PERMS:BACKING`, e.g. `0-4:rw-p:anon`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sharing = if self.shared { 's' } else { 'p' };
        write!(
            f,
            "{}-{}:{}{sharing}:{}",
            self.start, self.end, self.prot, self.backing
        )
    }
}

/// The `maps` result line: `maps` and one ` START-END:PERMS:BACKING` per entry.
pub fn format_maps(entries: &[MapEntry]) -> String {
    let mut line = String::from("maps");
    for entry in entries {
        line.push(' ');
        line.push_str(&entry.to_string());
    }
    line
}

/// What one op did; its [`Display`](fmt::Display) is the op's result line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `ok`: the call or the write succeeded.
    Ok,
    /// `err NAME`: the call failed with this errno.
    Err(Errno),
    /// `= V`: the read returned this byte.
    Value(u8),
    /// `SEGV`: the access faulted (no mapping, or the protection forbids it).
    Segv,
    /// `SIGBUS`: the access touched a file page past the end of the file.
    Sigbus,
    /// `OOM`: no frame was left for the page the access needed (where Linux
    /// would reclaim memory or invoke the OOM killer). Never a `SEGV`.
    Oom,
    /// `maps ...`: the mappings inside the window, in address order.
    Maps(Vec<MapEntry>),
    /// `parent` or `child`: the side the following lines run on.
    Side(Side),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Err(errno) => write!(f, "err {}", errno_name(*errno)),
            Outcome::Value(value) => write!(f, "= {value}"),
            Outcome::Segv => f.write_str("SEGV"),
            Outcome::Sigbus => f.write_str("SIGBUS"),
            Outcome::Oom => f.write_str("OOM"),
            Outcome::Maps(entries) => f.write_str(&format_maps(entries)),
            Outcome::Side(side) => side.fmt(f),
        }
    }
}

impl Outcome {
    /// The result line of a `read` or `write` that the vmspace library could
    /// not resolve, by the fault's cause: `SIGBUS` past the end of a file or
    /// on a failed read of the backing store, `OOM` when no frame was left,
    /// `SEGV` otherwise.
    pub fn of_fault(cause: vmspace::FaultCause) -> Outcome {
        use vmspace::FaultCause;
        match cause {
            FaultCause::NoMapping | FaultCause::Protection => Outcome::Segv,
            FaultCause::PastEnd | FaultCause::Io => Outcome::Sigbus,
            FaultCause::OutOfMemory => Outcome::Oom,
        }
    }
}

/// The symbolic name of an errno (`EINVAL`), or `E<number>` for one this
/// table does not know.
pub fn errno_name(errno: Errno) -> std::borrow::Cow<'static, str> {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("E{errno}").into(),
    };
    name.into()
}

/// Something that can execute ops: the host kernel, or the vmspace library.
pub trait Backend {
    /// Executes one op against this backend's window and reports what happened.
    fn exec(&mut self, op: &Op) -> Outcome;
}

/// Runs `ops` in order on `backend`: one result line per op.
pub fn run<B: Backend>(ops: &[Op], backend: &mut B) -> Vec<String> {
    ops.iter().map(|op| backend.exec(op).to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const SPEC_EXAMPLE: &str = "\
mmap 0 16 rw- anon private
write 3 7
read 3
read 20
mprotect 4 2 r--
maps
write 4 1
mprotect 4 2 rw-
maps
";

    /// The line number and message of a malformed script.
    fn parse_err(text: &str) -> (usize, String) {
        let error = parse(text).expect_err(text);
        (error.line, error.message)
    }

    /// Asserts that the single line `text` is malformed (reported on line 1).
    fn assert_malformed(text: &str) {
        let (line, _) = parse_err(text);
        assert_eq!(line, 1, "{text:?}");
    }

    #[test]
    fn spec_example_parses() {
        let ops = parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(ops.len(), 9);
        assert_eq!(
            ops[0],
            Op::Mmap {
                page: 0,
                npages: 16,
                prot: Prot::READ_WRITE,
                backing: Backing::Anon,
                sharing: Sharing::Private,
                flags: MmapFlags::default(),
            }
        );
        assert_eq!(ops[1], Op::Write { page: 3, value: 7 });
        assert_eq!(ops[3], Op::Read { page: 20 });
        assert_eq!(
            ops[4],
            Op::Mprotect {
                page: 4,
                npages: 2,
                prot: Prot::READ
            }
        );
        assert_eq!(ops[5], Op::Maps);
    }

    #[test]
    fn every_op_parses() {
        let text = "\
mmap 1 2 r-x file:8:1023 shared
munmap 65535 1
mremap 3 4 5
mremap 3 4 5 600
madvise 7 8 dontneed
write 65535 255
read 0
mprotect 0 65536 ---
";
        let ops = parse(text).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Mmap {
                    page: 1,
                    npages: 2,
                    prot: Prot {
                        read: true,
                        write: false,
                        exec: true
                    },
                    backing: Backing::File { id: 8, pgoff: 1023 },
                    sharing: Sharing::Shared,
                    flags: MmapFlags::default(),
                },
                Op::Munmap {
                    page: 65535,
                    npages: 1
                },
                Op::Mremap {
                    page: 3,
                    old_npages: 4,
                    new_npages: 5,
                    new_page: None
                },
                Op::Mremap {
                    page: 3,
                    old_npages: 4,
                    new_npages: 5,
                    new_page: Some(600)
                },
                Op::MadviseDontneed { page: 7, npages: 8 },
                Op::Write {
                    page: 65535,
                    value: 255
                },
                Op::Read { page: 0 },
                Op::Mprotect {
                    page: 0,
                    npages: 65536,
                    prot: Prot::NONE
                },
            ]
        );
    }

    #[test]
    fn ops_print_back_as_script_text() {
        let text = "\
mmap 1 2 -wx file:3:17 private
mmap 0 0 --- anon shared
munmap 5 6
mprotect 7 8 rw-
mremap 1 2 3
mremap 1 2 3 4
madvise 5 6 dontneed
madvise 5 6 free
madvise 5 6 populate_write
write 9 10
fork
child
read 11
parent
maps";
        let ops = parse(text).unwrap();
        let printed: Vec<String> = ops.iter().map(Op::to_string).collect();
        assert_eq!(printed.join("\n"), text);
    }

    #[test]
    fn zero_npages_is_well_formed() {
        let ops = parse(
            "mmap 0 0 rw- anon private\nmunmap 5 0\nmprotect 6 0 r--\nmremap 1 0 0\nmadvise 65536 0 dontneed",
        )
        .unwrap();
        assert_eq!(ops.len(), 5);
        assert_eq!(
            ops[4],
            Op::MadviseDontneed {
                page: 65536,
                npages: 0
            }
        );
    }

    #[test]
    fn blank_and_comment_lines_print_nothing_but_count() {
        let text = "\n# a comment\n   \n\t\n  # indented comment\n#nospace\nread 1\n";
        assert_eq!(parse(text).unwrap(), vec![Op::Read { page: 1 }]);
        assert_eq!(
            parse_err("\n# c\n\nbogus\n"),
            (4, "unknown operation `bogus`".into())
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn tabs_and_runs_of_spaces_separate_words() {
        let ops = parse("\tmmap\t0  4\t \trw-   anon\tshared  \n  read \t 2\t").unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Mmap {
                    page: 0,
                    npages: 4,
                    prot: Prot::READ_WRITE,
                    backing: Backing::Anon,
                    sharing: Sharing::Shared,
                    flags: MmapFlags::default(),
                },
                Op::Read { page: 2 },
            ]
        );
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        assert_eq!(
            parse("read 1\r\nmaps\r\n").unwrap(),
            vec![Op::Read { page: 1 }, Op::Maps]
        );
    }

    #[test]
    fn first_malformed_line_is_reported() {
        let text = "read 1\n\n# fine\nread x\nbogus\n";
        assert_eq!(parse_err(text).0, 4);
    }

    #[test]
    fn unknown_words_are_malformed() {
        for text in [
            "bogus",
            "MMAP 0 1 rw- anon private",
            "Read 1",
            "maps?",
            "mmap# 0",
            "x",
        ] {
            assert_malformed(text);
        }
    }

    #[test]
    fn missing_and_extra_words_are_malformed() {
        for text in [
            "mmap 0 1 rw- anon",
            "mmap 0 1 rw- anon private extra",
            "munmap 0",
            "munmap 0 1 2",
            "mprotect 0 1",
            "mprotect 0 1 rw- x",
            "mremap 0 1",
            "mremap 0 1 2 3 4",
            "madvise 0 1",
            "madvise 0 1 dontneed now",
            "write 1",
            "write 1 2 3",
            "read",
            "read 1 2",
            "maps 1",
            "mmap 0 1 rw- anon private # trailing comment",
        ] {
            assert_malformed(text);
        }
    }

    #[test]
    fn numbers_are_decimal_digits_only() {
        for text in [
            "read +1",
            "read -1",
            "read 0x10",
            "read 1.0",
            "read 1_000",
            "read ١",
            "read 1e3",
            "write 1 +5",
            "munmap 0 -0",
        ] {
            assert_malformed(text);
        }
        assert_eq!(parse("read 007").unwrap(), vec![Op::Read { page: 7 }]);
    }

    #[test]
    fn huge_numbers_are_malformed_not_panics() {
        for text in [
            "read 18446744073709551616",
            "read 99999999999999999999999999999999",
            "munmap 18446744073709551615 1",
            "munmap 1 18446744073709551615",
            "mremap 0 1 18446744073709551615",
            "mremap 0 1 1 18446744073709551615",
            "mmap 0 1 r-- file:1:18446744073709551616 private",
            "mmap 0 1 r-- file:256:0 private",
            "mmap 0 1 r-- file:99999999999999999999999:0 private",
            "write 0 256",
            "write 0 99999999999999999999",
        ] {
            assert_malformed(text);
        }
    }

    #[test]
    fn ranges_must_stay_in_the_window() {
        for text in [
            "read 65536",
            "write 65536 1",
            "munmap 65535 2",
            "mmap 65536 1 rw- anon private",
            "mprotect 0 65537 r--",
            "madvise 60000 6000 dontneed",
            "mremap 65535 2 1",
            "mremap 0 1 65537",
            "mremap 65000 1 1000",
            "mremap 0 1 2 65535",
            "mremap 0 1 0 65537",
        ] {
            assert_malformed(text);
        }
        assert!(parse("munmap 0 65536\nmremap 0 1 65536\nmremap 0 1 1 65535").is_ok());
    }

    #[test]
    fn values_are_bytes() {
        assert_eq!(
            parse("write 0 0").unwrap(),
            vec![Op::Write { page: 0, value: 0 }]
        );
        assert_eq!(
            parse("write 0 255").unwrap(),
            vec![Op::Write {
                page: 0,
                value: 255
            }]
        );
        assert_malformed("write 0 256");
    }

    #[test]
    fn prot_grammar() {
        for good in ["---", "r--", "-w-", "--x", "rw-", "r-x", "-wx", "rwx"] {
            let text = format!("mprotect 0 1 {good}");
            let Op::Mprotect { prot, .. } = parse(&text).unwrap()[0] else {
                panic!("{text}");
            };
            assert_eq!(prot.to_string(), good);
        }
        for bad in [
            "rw", "rw--", "wr-", "RW-", "r_w", "x--", "rwxp", "r-é", "é-",
        ] {
            assert_malformed(&format!("mprotect 0 1 {bad}"));
        }
    }

    #[test]
    fn backing_grammar_and_file_ids() {
        for id in 1..=8 {
            let text = format!("mmap 0 1 r-- file:{id}:5 private");
            assert!(parse(&text).is_ok(), "{text}");
        }
        let max = format!("mmap 0 1 r-- file:1:{MAX_PGOFF} private");
        assert!(parse(&max).is_ok());
        for bad in [
            "file:0:0",
            "file:9:0",
            "file:1",
            "file:1:",
            "file::1",
            "file:1:2:3",
            "file:a:1",
            "file:1:x",
            "file:+1:1",
            "File:1:1",
            "anonymous",
            "ANON",
            "file",
            "file:",
        ] {
            assert_malformed(&format!("mmap 0 1 r-- {bad} private"));
        }
        assert_malformed(&format!("mmap 0 1 r-- file:1:{} private", MAX_PGOFF + 1));
    }

    #[test]
    fn sharing_and_advice_words() {
        assert_malformed("mmap 0 1 r-- anon Private");
        assert_malformed("mmap 0 1 r-- anon both");
        assert_malformed("madvise 0 1 willneed");
        assert_malformed("madvise 0 1 DONTNEED");
    }

    #[test]
    fn every_advice_parses_by_its_name() {
        for advice in Advice::ALL {
            let ops = parse(&format!("madvise 1 2 {}", advice.name())).unwrap();
            let expected = Op::Madvise {
                page: 1,
                npages: 2,
                advice,
            };
            assert_eq!(ops, vec![expected]);
        }
        assert_malformed("madvise 0 1 Free");
        assert_malformed("madvise 0 1 populate");
    }

    #[test]
    fn mmap_flags_and_mlock_parse() {
        let ops = parse(
            "mmap 0 1 rw- anon private stack noreserve\nmlock 1 2\nmlock 1 2 onfault\nmunlock 3 4",
        )
        .unwrap();
        let Op::Mmap { flags, .. } = ops[0] else {
            panic!("{:?}", ops[0])
        };
        assert_eq!(
            flags,
            MmapFlags {
                noreserve: true,
                stack: true
            }
        );
        assert_eq!(
            ops[0].to_string(),
            "mmap 0 1 rw- anon private noreserve stack"
        );
        assert_eq!(
            ops[2],
            Op::Mlock {
                page: 1,
                npages: 2,
                onfault: true
            }
        );
        assert_eq!(ops[3], Op::Munlock { page: 3, npages: 4 });
        assert_malformed("mmap 0 1 rw- anon private stack stack");
        assert_malformed("mmap 0 1 rw- anon private locked");
        assert_malformed("mmap 0 1 rw- anon");
        assert_malformed("mlock 0 1 now");
        assert_malformed("mlock 0");
        assert_malformed("mlock 0 1 onfault onfault");
        assert_malformed("munlock 0 1 onfault");
        assert_malformed("mlock 65535 2");
    }

    #[test]
    fn fork_comes_once_and_before_the_sides() {
        let ops = parse("fork\nchild\nread 1\nparent\nchild\n").unwrap();
        assert_eq!(ops[0], Op::Fork);
        assert_eq!(ops[1], Op::Side(Side::Child));
        assert_eq!(ops[3], Op::Side(Side::Parent));
        assert_eq!(parse_err("read 1\nchild\n").0, 2);
        assert_eq!(parse_err("parent\nfork\n").0, 1);
        assert_eq!(parse_err("fork\nchild\nfork\n").0, 3);
        assert_malformed("fork 1");
        assert_malformed("child now");
        assert_eq!(Outcome::Side(Side::Child).to_string(), "child");
        assert_eq!(Outcome::Side(Side::Parent).to_string(), "parent");
    }

    #[test]
    fn parse_error_display_names_the_line() {
        let error = parse("read 1\nread 2 3\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.to_string().starts_with("line 2: "), "{error}");
    }

    #[test]
    fn outcomes_print_as_result_lines() {
        assert_eq!(Outcome::Ok.to_string(), "ok");
        assert_eq!(Outcome::Err(libc::EINVAL).to_string(), "err EINVAL");
        assert_eq!(Outcome::Err(libc::ENOMEM).to_string(), "err ENOMEM");
        assert_eq!(Outcome::Err(4242).to_string(), "err E4242");
        assert_eq!(Outcome::Value(7).to_string(), "= 7");
        assert_eq!(Outcome::Segv.to_string(), "SEGV");
        assert_eq!(Outcome::Sigbus.to_string(), "SIGBUS");
        assert_eq!(Outcome::Oom.to_string(), "OOM");
        assert_eq!(Outcome::Maps(vec![]).to_string(), "maps");
    }

    /// Running out of frames is its own result, never a protection fault;
    /// the other causes print as Linux's signals do.
    #[test]
    fn fault_causes_print_as_their_result_lines() {
        use vmspace::FaultCause;
        for (cause, line) in [
            (FaultCause::NoMapping, "SEGV"),
            (FaultCause::Protection, "SEGV"),
            (FaultCause::PastEnd, "SIGBUS"),
            (FaultCause::Io, "SIGBUS"),
            (FaultCause::OutOfMemory, "OOM"),
        ] {
            assert_eq!(Outcome::of_fault(cause).to_string(), line, "{cause:?}");
        }
    }

    /// A line is at most `MAX_LINE_BYTES` before its newline; reading stops
    /// at the first line over it, even one that never ends.
    #[test]
    fn lines_over_the_limit_are_malformed() {
        let pad = |n: usize| format!("read 1{}", " ".repeat(n - 6));
        assert_eq!(parse(&pad(MAX_LINE_BYTES)).unwrap().len(), 1);
        assert_eq!(parse(&(pad(MAX_LINE_BYTES) + "\n")).unwrap().len(), 1);
        let (line, message) = parse_err(&format!("maps\n{}\nmaps\n", pad(MAX_LINE_BYTES + 1)));
        assert_eq!(line, 2);
        assert!(message.contains("4096"), "{message}");
        // The `\r` of a `\r\n` ending counts.
        assert_eq!(parse_err(&(pad(MAX_LINE_BYTES) + "\r\n")).0, 1);

        /// An endless line: reading it would never stop.
        struct Endless(usize);
        impl io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'x');
                self.0 += buf.len();
                Ok(buf.len())
            }
        }
        let mut endless = Endless(0);
        let error = read(io::BufReader::new(&mut endless)).unwrap_err();
        assert!(matches!(
            error,
            ReadError::Malformed(ParseError { line: 1, .. })
        ));
        assert!(
            endless.0 <= 2 * MAX_LINE_BYTES + 8192,
            "read {} bytes",
            endless.0
        );
    }

    #[test]
    fn scripts_over_the_limit_are_malformed() {
        let line = format!("#{}\n", "x".repeat(MAX_LINE_BYTES - 2));
        let lines = MAX_SCRIPT_BYTES as usize / line.len();
        let text = line.repeat(lines);
        assert_eq!(text.len() as u64, MAX_SCRIPT_BYTES);
        assert_eq!(parse(&(text.clone() + "maps")).unwrap_err().line, lines + 1);
        assert_eq!(parse(&text).unwrap(), vec![]);
        let text = text + "maps\n";
        let (line, message) = parse_err(&text);
        assert_eq!(line, lines + 1);
        assert!(message.contains("longer than"), "{message}");
    }

    #[test]
    fn error_messages_quote_a_long_word_in_80_characters() {
        let word = "é".repeat(1000);
        for text in [
            format!("{word} 1"),
            format!("read {word}"),
            format!("read 1{}", "9".repeat(1000)),
            format!("mprotect 0 1 {word}"),
            format!("mmap 0 1 rw- {word} private"),
            format!("mmap 0 1 rw- anon {word}"),
            format!("madvise 0 1 {word}"),
        ] {
            let (_, message) = parse_err(&text);
            let longest = message
                .split('`')
                .map(|part| part.chars().count())
                .max()
                .unwrap_or(0);
            assert!(longest <= QUOTE_CHARS + 3, "{message}");
            assert!(message.chars().count() < 200, "{message}");
        }
        assert_eq!(quote("short"), "`short`");
        assert_eq!(quote(&"a".repeat(80)), format!("`{}`", "a".repeat(80)));
        assert_eq!(
            quote(&"a".repeat(81)),
            format!("`{}...` (81 bytes)", "a".repeat(80))
        );
    }

    #[test]
    fn maps_line_format() {
        let entries = [
            MapEntry {
                start: 0,
                end: 4,
                prot: Prot::READ_WRITE,
                shared: false,
                backing: Backing::Anon,
            },
            MapEntry {
                start: 4,
                end: 6,
                prot: Prot::READ,
                shared: true,
                backing: Backing::Anon,
            },
            MapEntry {
                start: 10,
                end: 11,
                prot: Prot {
                    read: true,
                    write: false,
                    exec: true,
                },
                shared: false,
                backing: Backing::File { id: 3, pgoff: 1022 },
            },
        ];
        assert_eq!(
            format_maps(&entries),
            "maps 0-4:rw-p:anon 4-6:r--s:anon 10-11:r-xp:file:3:1022"
        );
        assert_eq!(format_maps(&[]), "maps");
    }

    #[test]
    fn file_bytes_follow_the_spec() {
        assert_eq!(file_byte(1, 0), 37);
        assert_eq!(file_byte(1, 1023), ((37 + 1023) % 251) as u8);
        assert_eq!(file_byte(8, 1023), ((8 * 37 + 1023) % 251) as u8);
        assert_eq!(file_byte(7, 2 * 251 - 7 * 37), 0);
    }

    struct Recorder(Vec<Op>);

    impl Backend for Recorder {
        fn exec(&mut self, op: &Op) -> Outcome {
            self.0.push(op.clone());
            match op {
                Op::Read { page } => Outcome::Value(*page as u8),
                Op::Maps => Outcome::Maps(vec![]),
                _ => Outcome::Ok,
            }
        }
    }

    #[test]
    fn run_prints_one_line_per_op_in_order() {
        let ops = parse("write 1 2\nread 9\nmaps\n").unwrap();
        let mut backend = Recorder(vec![]);
        assert_eq!(run(&ops, &mut backend), ["ok", "= 9", "maps"]);
        assert_eq!(backend.0, ops);
    }

    /// Random text built from script-like fragments and raw bytes: `parse`
    /// must return (either way) without panicking, and accepted scripts must
    /// print back to text that parses to the same ops.
    #[test]
    fn parse_never_panics_on_random_input() {
        const FRAGMENTS: &[&str] = &[
            "mmap",
            "munmap",
            "mprotect",
            "mremap",
            "madvise",
            "write",
            "read",
            "maps",
            "dontneed",
            "anon",
            "file:",
            ":",
            "private",
            "shared",
            "rw-",
            "r-x",
            "---",
            "0",
            "1",
            "65535",
            "65536",
            "255",
            "256",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "-",
            "+",
            "#",
            " ",
            "\t",
            "\n",
            "\r\n",
            "\r",
            "é",
            "\0",
        ];
        let mut rng = SmallRng::seed_from_u64(0x0076_6d73_7061_6365);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..rng.gen_range(0..24) {
                if rng.gen_bool(0.1) {
                    let bytes: Vec<u8> = (0..rng.gen_range(1..6)).map(|_| rng.gen()).collect();
                    text.push_str(&String::from_utf8_lossy(&bytes));
                } else {
                    text.push_str(FRAGMENTS[rng.gen_range(0..FRAGMENTS.len())]);
                    if rng.gen_bool(0.6) {
                        text.push(' ');
                    }
                }
            }
            if let Ok(ops) = parse(&text) {
                accepted += 1;
                let printed: Vec<String> = ops.iter().map(Op::to_string).collect();
                assert_eq!(parse(&printed.join("\n")).unwrap(), ops, "{text:?}");
            }
        }
        assert!(accepted > 0);
    }

    /// Well-formed random lines always parse, and print back identically.
    #[test]
    fn random_well_formed_lines_round_trip() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let page = rng.gen_range(0..WINDOW_PAGES);
            let npages = rng.gen_range(0..=WINDOW_PAGES - page);
            let prot = Prot {
                read: rng.gen(),
                write: rng.gen(),
                exec: rng.gen(),
            };
            let backing = if rng.gen() {
                Backing::Anon
            } else {
                Backing::File {
                    id: rng.gen_range(1..=8),
                    pgoff: rng.gen_range(0..=MAX_PGOFF),
                }
            };
            let sharing = if rng.gen() {
                Sharing::Private
            } else {
                Sharing::Shared
            };
            let op = match rng.gen_range(0..12) {
                0 => Op::Mmap {
                    page,
                    npages,
                    prot,
                    backing,
                    sharing,
                    flags: MmapFlags::default(),
                },
                1 => Op::Munmap { page, npages },
                2 => Op::Mprotect { page, npages, prot },
                3 => Op::Mremap {
                    page,
                    old_npages: npages,
                    new_npages: npages,
                    new_page: None,
                },
                4 => Op::Mremap {
                    page,
                    old_npages: npages,
                    new_npages: 0,
                    new_page: Some(page),
                },
                5 => Op::MadviseDontneed { page, npages },
                8 => Op::Madvise {
                    page,
                    npages,
                    advice: Advice::ALL[rng.gen_range(0..Advice::ALL.len())],
                },
                9 => Op::Mlock {
                    page,
                    npages,
                    onfault: rng.gen(),
                },
                10 => Op::Munlock { page, npages },
                11 => Op::Mmap {
                    page,
                    npages,
                    prot,
                    backing,
                    sharing,
                    flags: MmapFlags {
                        noreserve: rng.gen(),
                        stack: rng.gen(),
                    },
                },
                6 => Op::Write {
                    page,
                    value: rng.gen(),
                },
                _ => Op::Read { page },
            };
            assert_eq!(parse(&op.to_string()).unwrap(), vec![op]);
        }
    }
}
