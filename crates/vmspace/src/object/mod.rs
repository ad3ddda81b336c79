//! What backs a VMA: anonymous objects (`anon.rs`) and files with their page
//! cache (`file.rs`), each with the ranges its VMAs map (`mappings.rs`).

mod anon;
mod file;
mod mappings;

pub(crate) use mappings::Mapping;

pub use anon::AnonObject;
pub use file::{BackingStore, DiskStore, File, FillError, MemoryStore, ZeroStore};
