//! Guides for programmers who know libuv, tokio or duct. Their code examples are compiled
//! and run as doc tests.

#[doc = include_str!("../docs/from-libuv.md")]
pub mod from_libuv {}

#[doc = include_str!("../docs/from-tokio-and-duct.md")]
pub mod from_tokio_and_duct {}

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub mod readme {}
