//! Reading the window's mappings from `/proc/self/maps` and converting them
//! to vmscript's [`MapEntry`]: window-relative pages, file IDs recognised by
//! the memfd names (`/memfd:vmscript-3 (deleted)`), shared anonymous memory
//! (`/dev/zero (deleted)`) shown as `anon`.

use std::fs::File;
use std::io::{self, Read};

use crate::script::{Backing, MapEntry, Prot, FILE_COUNT, PAGE, WINDOW_PAGES};

/// The read buffer: far longer than any line of `/proc/self/maps`.
const BUFFER_SIZE: usize = 64 * 1024;

/// The memfd name prefix of the script's files, as `/proc/self/maps` shows it.
const FILE_PREFIX: &str = "/memfd:vmscript-";

/// Reads `/proc/self/maps` through a buffer allocated once, up front (so that
/// reading never allocates big buffers while the window exists).
pub(super) struct MapsReader {
    buffer: Vec<u8>,
}

impl MapsReader {
    /// Allocates the buffer.
    pub(super) fn new() -> Self {
        MapsReader {
            buffer: vec![0; BUFFER_SIZE],
        }
    }

    /// The mappings inside the window at `base`, in address order.
    pub(super) fn read(&mut self, base: usize) -> io::Result<Vec<MapEntry>> {
        let window = Window::at(base as u64);
        let mut file = File::open("/proc/self/maps")?;
        let mut entries = Vec::new();
        let mut filled = 0;
        loop {
            let count = match file.read(&mut self.buffer[filled..]) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            filled += count;
            let consumed = parse_lines(&self.buffer[..filled], window, &mut entries)?;
            self.buffer.copy_within(consumed..filled, 0);
            filled -= consumed;
            if filled == self.buffer.len() {
                return Err(invalid(
                    "a line of /proc/self/maps is longer than the buffer",
                ));
            }
        }
        if filled > 0 {
            entries.extend(parse_line(&self.buffer[..filled], window).map_err(invalid)?);
        }
        Ok(entries)
    }
}

/// The window's address range.
#[derive(Clone, Copy, Debug)]
struct Window {
    base: u64,
    end: u64,
}

impl Window {
    fn at(base: u64) -> Window {
        Window {
            base,
            end: base + WINDOW_PAGES * PAGE,
        }
    }
}

/// Parses the complete lines at the start of `bytes`, appending the entries
/// inside `window`; returns the number of bytes consumed.
fn parse_lines(bytes: &[u8], window: Window, entries: &mut Vec<MapEntry>) -> io::Result<usize> {
    let mut consumed = 0;
    while let Some(length) = bytes[consumed..].iter().position(|&byte| byte == b'\n') {
        let line = &bytes[consumed..consumed + length];
        entries.extend(parse_line(line, window).map_err(invalid)?);
        consumed += length + 1;
    }
    Ok(consumed)
}

/// One line of `/proc/self/maps`:
/// `START-END PERMS OFFSET DEV INODE [PATH]`, addresses and offset in hex.
/// `Ok(None)` for a mapping outside the window.
fn parse_line(line: &[u8], window: Window) -> Result<Option<MapEntry>, String> {
    let text = String::from_utf8_lossy(line);
    let bad = || format!("unexpected /proc/self/maps line {text:?}");
    let mut fields = line.splitn(6, |&byte| byte == b' ');
    let mut next = || fields.next().ok_or_else(bad);
    let (range, perms, offset) = (next()?, next()?, next()?);
    let (_device, _inode, path) = (next()?, next()?, next().unwrap_or(b""));
    let (start, end) = split_once(range, b'-').ok_or_else(bad)?;
    let (start, end) = (hex(start).ok_or_else(bad)?, hex(end).ok_or_else(bad)?);
    if end <= window.base || start >= window.end {
        return Ok(None);
    }
    if start < window.base || end > window.end {
        return Err(format!("a mapping straddles the window's edge: {text:?}"));
    }
    let (prot, shared) = parse_perms(perms).ok_or_else(bad)?;
    let offset = hex(offset).ok_or_else(bad)?;
    let path = String::from_utf8_lossy(path.trim_ascii());
    let backing = backing(&path, offset).ok_or_else(bad)?;
    let page = |address: u64| (address - window.base) / PAGE;
    Ok(Some(MapEntry {
        start: page(start),
        end: page(end),
        prot,
        shared,
        backing,
    }))
}

/// Splits `bytes` at the first `separator`.
fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&byte| byte == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// A hexadecimal number.
fn hex(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

/// `rw-p` style permissions: the protection and whether the mapping is shared.
fn parse_perms(perms: &[u8]) -> Option<(Prot, bool)> {
    let &[r, w, x, sharing] = perms else {
        return None;
    };
    let flag = |byte: u8, letter: u8| match byte {
        b'-' => Some(false),
        _ if byte == letter => Some(true),
        _ => None,
    };
    let prot = Prot {
        read: flag(r, b'r')?,
        write: flag(w, b'w')?,
        exec: flag(x, b'x')?,
    };
    let shared = match sharing {
        b's' => true,
        b'p' => false,
        _ => return None,
    };
    Some((prot, shared))
}

/// The backing of a mapping of `path` at byte `offset`: one of the script's
/// files, or anonymous memory (private: no path; shared: `/dev/zero`, or a
/// SysV segment). `None` for anything a script cannot have mapped.
fn backing(path: &str, offset: u64) -> Option<Backing> {
    if path.is_empty() || path.starts_with("/dev/zero") || path.starts_with("/SYSV") {
        return Some(Backing::Anon);
    }
    let name = path.strip_prefix(FILE_PREFIX)?;
    let id = name.strip_suffix(" (deleted)").unwrap_or(name);
    // File IDs are the single digits 1..=FILE_COUNT (FILE_COUNT is 8).
    let &[digit @ b'1'..=b'9'] = id.as_bytes() else {
        return None;
    };
    let id = digit - b'0';
    (id <= FILE_COUNT).then_some(Backing::File {
        id,
        pgoff: offset / PAGE,
    })
}

/// An `InvalidData` error.
fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7f00_0000_0000;

    fn window() -> Window {
        Window::at(BASE)
    }

    /// A maps line for window pages `start..end`.
    fn line(start: u64, end: u64, rest: &str) -> String {
        format!("{:x}-{:x} {rest}", BASE + start * PAGE, BASE + end * PAGE)
    }

    fn parse(text: &str) -> Result<Option<MapEntry>, String> {
        parse_line(text.as_bytes(), window())
    }

    #[test]
    fn private_anonymous_mapping() {
        let entry = parse(&line(0, 4, "rw-p 00000000 00:00 0"))
            .unwrap()
            .unwrap();
        assert_eq!(entry.to_string(), "0-4:rw-p:anon");
    }

    #[test]
    fn shared_anonymous_mapping_is_anon_with_s() {
        let text = line(
            2,
            3,
            "r--s 00000000 00:01 1043                       /dev/zero (deleted)",
        );
        assert_eq!(parse(&text).unwrap().unwrap().to_string(), "2-3:r--s:anon");
    }

    #[test]
    fn memfd_file_mapping_has_id_and_page_offset() {
        let text = line(
            10,
            12,
            "r-xp 003fe000 00:01 77   /memfd:vmscript-3 (deleted)",
        );
        assert_eq!(
            parse(&text).unwrap().unwrap().to_string(),
            "10-12:r-xp:file:3:1022"
        );
        let text = line(0, 1, "-w-s 00000000 00:01 77 /memfd:vmscript-8");
        assert_eq!(
            parse(&text).unwrap().unwrap().to_string(),
            "0-1:-w-s:file:8:0"
        );
    }

    #[test]
    fn mappings_outside_the_window_are_skipped() {
        let below = format!("{:x}-{:x} rw-p 00000000 00:00 0 [heap]", BASE - PAGE, BASE);
        assert_eq!(parse(&below), Ok(None));
        let above = line(
            WINDOW_PAGES,
            WINDOW_PAGES + 1,
            "---s 00000000 00:01 9 /memfd:vmscript-guard (deleted)",
        );
        assert_eq!(parse(&above), Ok(None));
    }

    #[test]
    fn straddling_and_foreign_mappings_are_errors() {
        assert!(parse(&line(WINDOW_PAGES - 1, WINDOW_PAGES + 1, "rw-p 0 00:00 0")).is_err());
        assert!(parse(&line(0, 1, "rw-p 0 08:01 5 /usr/lib/libc.so.6")).is_err());
        assert!(parse(&line(0, 1, "rw-p 0 00:01 5 /memfd:vmscript-9 (deleted)")).is_err());
        assert!(parse(&line(0, 1, "rw-p 0 00:01 5 /memfd:vmscript-03 (deleted)")).is_err());
        assert!(parse(&line(0, 1, "rw-q 0 00:00 0")).is_err());
        assert!(parse("garbage").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn lines_are_split_across_reads() {
        let text = format!(
            "{}\n{}\n{}",
            line(0, 1, "rw-p 00000000 00:00 0"),
            line(1, 2, "r--p 00000000 00:00 0"),
            line(2, 3, "r--p 00000000 00:00 0"),
        );
        let mut entries = Vec::new();
        let consumed = parse_lines(text.as_bytes(), window(), &mut entries).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(&text[consumed..], line(2, 3, "r--p 00000000 00:00 0"));
    }
}
