//! The library half of the `vmspace` binary: the vmscript language
//! ([`script`]) and the host-kernel reference backend ([`host`]).
//!
//! The binary (`src/main.rs`) owns the command line; this library owns
//! everything a test or another subcommand may want to reuse.

pub mod backend;
pub mod host;
pub mod script;
