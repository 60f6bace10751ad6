//! `sqlx::migrate!` embeds the migration files when this crate compiles, and a new file
//! changes no Rust source: without this, a build after adding a migration silently kept the
//! old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
