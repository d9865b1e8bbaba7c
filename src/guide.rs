//! Guides for programmers who know libuv, tokio or duct, and for tools that drive programs
//! on a pty. Their code examples are compiled and run as doc tests.

#[doc = include_str!("../docs/from-libuv.md")]
pub mod from_libuv {}

#[doc = include_str!("../docs/from-tokio-and-duct.md")]
pub mod from_tokio_and_duct {}

#[doc = include_str!("../docs/programs-on-a-pty.md")]
pub mod programs_on_a_pty {}

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub mod readme {}
