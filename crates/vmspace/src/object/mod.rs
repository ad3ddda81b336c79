//! What backs a VMA: anonymous objects (`anon.rs`) and files with their page
//! cache (`file.rs`).

mod anon;
mod file;

pub use anon::AnonObject;
pub use file::{BackingStore, DiskStore, File, FillError, MemoryStore, ZeroStore};
