//! The git revision for `--version`: see the `git-revision` crate.

fn main() {
    git_revision::emit();
}
