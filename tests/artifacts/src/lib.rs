//! Paths of the guest components tests load, as `&str` constants (`HOSTILE`, `BAD_IMPORT`,
//! `CONNECTOR_HTTP`, ...), one per package in `guests.txt`. This crate's build script builds
//! them all once, before any test compiles; tests never run cargo themselves.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
