//! certd's bottom layer: the vocabulary every other part shares, and
//! nothing that knows of them. Names parsed once at the edge (`identity`),
//! selectors (`selector`), the records certd keeps (`model`), the time of day (`clock`), the one classification
//! of errors (`error_kind`), the data directory's file names (`data_dir`),
//! careful file operations and randomness (`fsutil`), and the TLS crypto
//! provider (`crypto`).
//!
//! Being its own crate is the point: the compiler refuses any import from
//! here into the CA, the store, the server or the CLI.

#![forbid(unsafe_code)]

pub mod clock;
pub mod crypto;
pub mod data_dir;
pub mod error_kind;
pub mod fsutil;
pub mod identity;
pub mod model;
pub mod selector;

pub use data_dir::DataDir;
pub use error_kind::ErrorKind;
