//! Paths of guest components built for tests.
