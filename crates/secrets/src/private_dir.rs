//! Owner-only directories for what the service keeps on disk.

use std::fs;
use std::path::Path;

/// Creates `dir` and its missing parents owner-only (0700), as everything the service creates
/// in its data directory is: the database, the keys and the compiled components (native code
/// the host runs) are nobody else's to read or write. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}
