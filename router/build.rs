//! Build facts for `hubify_build_info`: the git commit, from `HUBIFY_EDGE_GIT_COMMIT` when set
//! (container builds without `.git`), else `git rev-parse HEAD`, else `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn is_commit(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HUBIFY_EDGE_GIT_COMMIT");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));

    let from_env = std::env::var("HUBIFY_EDGE_GIT_COMMIT")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let commit = from_env.or_else(|| {
        let head = git(&dir, &["rev-parse", "HEAD"]).filter(|h| is_commit(h))?;
        // Rebuild when HEAD moves: the HEAD file, the branch ref it points to, packed refs. Only
        // existing files are named (a missing one would make cargo rerun this every build).
        let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
        if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
            watched.push(branch);
        }
        for name in watched {
            if let Some(p) = git(&dir, &["rev-parse", "--git-path", &name]) {
                let p = dir.join(p);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
        Some(head)
    });
    let commit = commit.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=HUBIFY_EDGE_GIT_COMMIT={commit}");
}
