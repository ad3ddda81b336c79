//! The library half of the `vmspace` binary: the vmscript language
//! ([`script`]), the host-kernel reference backend ([`host`]), and the random
//! script generator with its coverage classifier ([`gen`]).
//!
//! The binary (`src/main.rs`) owns the command line; this library owns
//! everything a test or another subcommand may want to reuse.

pub mod backend;
pub mod gen;
pub mod host;
pub mod script;
pub mod torture;
