//! `vmspace replay` on arbitrary bytes: never a panic. Random byte strings
//! and mutations of well-formed scripts (bytes flipped, lines cut, numbers
//! made huge) must either run (exit 0, one output line per operation) or be
//! refused as malformed (exit 2, nothing on stdout, a message naming a line).
//! The library backend runs them, so no host process is needed.
//!
//! `PROPTEST_CASES` sets the number of inputs (default 200).

use proptest::prelude::*;
use std::process::Command;

const SCRIPT: &str = "mmap 0 16 rw- anon private\nwrite 3 7\nread 3\nmprotect 4 2 r--\n\
mremap 0 4 8 100\nmadvise 100 8 dontneed\nmmap 20 4 r-- file:2:1022 shared\nread 23\nmaps\n";

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = std::env::temp_dir().join(format!("vmspace-replay-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("input-{n}.vms"));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .arg("replay")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(2) => {
            prop_assert!(
                stdout.is_empty(),
                "malformed input printed results: {stdout}"
            );
            prop_assert!(stderr.contains("line "), "no line number: {stderr}");
        }
        other => prop_assert!(false, "exit {other:?} on {bytes:?}: {stderr}"),
    }
    prop_assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// A well-formed script with a few random edits.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edits =
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6);
    edits.prop_map(|edits| {
        let mut b = SCRIPT.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let i = at.index(b.len().max(1));
            match kind {
                0 => b[i] = byte,
                1 => b.truncate(i),
                2 => b
                    .splice(i..i, b"99999999999999999999".iter().copied())
                    .for_each(drop),
                _ => b.insert(i, byte),
            }
            if b.is_empty() {
                b.push(b'\n');
            }
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_crash(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check(&bytes)?;
    }

    #[test]
    fn mutated_scripts_never_crash(bytes in mutated()) {
        check(&bytes)?;
    }
}
