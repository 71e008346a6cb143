//! Replays the fuzz corpus (`fuzz/corpus/rewrite/`) through the fuzz target's own body,
//! `sessionkeeper::fuzzing::fuzz_one`: a crash the fuzzer found stays fixed once its input is
//! added there.

use std::path::Path;

#[test]
fn fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rewrite");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    assert!(
        files.len() >= 20,
        "{} holds {} seeds",
        dir.display(),
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).unwrap_or_default();
        let name = path.display().to_string();
        #[allow(clippy::disallowed_methods)] // the base of the run's virtual clock
        let now = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(|| sessionkeeper::fuzzing::fuzz_one(&data, now));
        assert!(outcome.is_ok(), "{name} fails");
    }
}
