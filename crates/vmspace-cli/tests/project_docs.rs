//! What the README and the manifests promise, checked:
//!
//! * `rust_version_is_inherited_by_every_crate`: the workspace sets
//!   `rust-version` and every member inherits it, so clippy's
//!   `incompatible_msrv` lint (run by `scripts/test.sh` under `-D warnings`)
//!   checks every crate's use of the standard library against it;
//! * `no_dependency_needs_a_newer_rust`: no package this platform builds
//!   (normal, build and dev dependencies, from `Cargo.lock`) declares a
//!   `rust-version` above the workspace's. The loom models (`--cfg loom`)
//!   are not part of that build: `cargo metadata` leaves `cfg(loom)`
//!   dependencies out, and the README says what they need;
//! * `readme_quick_start_is_the_example`: the README's quick start is
//!   `crates/vmspace/examples/quick_start.rs` (also the library's doctest),
//!   word for word;
//! * `readme_links_point_to_files`: every relative link of the README names a
//!   file of the repository.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    let path = root().join(path);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// `1.88` or `1.85.0` as numbers, for comparing.
fn version(text: &str) -> Vec<u64> {
    text.split('.')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("rust-version `{text}`"))
        })
        .collect()
}

/// The workspace's `rust-version = "X.Y"`.
fn workspace_rust_version() -> String {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|line| line.starts_with("rust-version = "))
        .expect("the workspace Cargo.toml sets rust-version");
    line.trim_start_matches("rust-version = ")
        .trim_matches('"')
        .to_owned()
}

/// The paths of the workspace members' manifests (`crates/*/Cargo.toml`).
fn member_manifests() -> Vec<PathBuf> {
    let mut manifests: Vec<PathBuf> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("Cargo.toml"))
        .filter(|path| path.exists())
        .collect();
    manifests.sort();
    manifests
}

#[test]
fn rust_version_is_inherited_by_every_crate() {
    let workspace = workspace_rust_version();
    assert!(
        version(&workspace) >= vec![1, 80],
        "rust-version {workspace}"
    );
    let manifests = member_manifests();
    assert!(manifests.len() >= 3, "{manifests:?}");
    for manifest in manifests {
        let text = fs::read_to_string(&manifest).unwrap();
        assert!(
            text.lines()
                .any(|line| line == "rust-version.workspace = true"),
            "{} does not inherit the workspace's rust-version \
             (add `rust-version.workspace = true` to its [package])",
            manifest.display()
        );
    }
}

#[test]
fn no_dependency_needs_a_newer_rust() {
    let workspace = version(&workspace_rust_version());
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--offline"]);
    if cfg!(all(
        target_os = "linux",
        target_arch = "x86_64",
        target_env = "gnu"
    )) {
        command.args(["--filter-platform", "x86_64-unknown-linux-gnu"]);
    }
    let output = command.output().expect("cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().expect("packages");
    assert!(packages.len() > 10, "{} packages", packages.len());
    let newer: Vec<String> = packages
        .iter()
        .filter_map(|package| {
            let needs = package["rust_version"].as_str()?;
            (version(needs) > workspace).then(|| {
                format!(
                    "{} {} needs {needs}",
                    package["name"].as_str().unwrap_or("?"),
                    package["version"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    assert!(
        newer.is_empty(),
        "dependencies need a newer Rust than the workspace's rust-version: {}",
        newer.join(", ")
    );
}

#[test]
fn readme_quick_start_is_the_example() {
    let readme = read("README.md");
    let example = read("crates/vmspace/examples/quick_start.rs");
    let block = format!("```rust\n{example}```\n");
    assert!(
        readme.contains(&block),
        "README.md must show crates/vmspace/examples/quick_start.rs in full, \
         in a ```rust block"
    );
}

#[test]
fn readme_links_point_to_files() {
    let readme = read("README.md");
    let mut links = 0;
    for (start, _) in readme.match_indices("](") {
        let rest = &readme[start + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split('#').next().unwrap_or("");
        if target.is_empty() || target.contains("://") {
            continue;
        }
        links += 1;
        assert!(
            root().join(target).exists(),
            "README.md links to `{target}`, which does not exist"
        );
    }
    assert!(links >= 5, "{links} relative links");
}
