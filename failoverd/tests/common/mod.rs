//! Scaffolding shared by the daemon's integration tests.

use std::path::PathBuf;

/// A scratch directory, removed when dropped.
pub struct Dir(pub PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty `$TMPDIR/<prefix>-<pid>-<name>`.
pub fn scratch(prefix: &str, name: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Dir(dir)
}
