//! One-host restart without a gap: a new process takes the listening sockets over from the
//! running one (Pingora's graceful upgrade), so at no moment is there no listener.
//!
//! 1. `hubify-edge --config F run --upgrade` reads the running process's pid from
//!    `<server.upgrade_socket>.pid` and sends it SIGQUIT, then starts with Pingora's `upgrade`
//!    option: it listens on `server.upgrade_socket` and waits there for the sockets.
//! 2. The running process, on SIGQUIT, waits (at most [`RECEIVER_WAIT`]) until a process listens
//!    on that socket, and hands its listening sockets over. Both processes then accept on the
//!    same sockets for Pingora's 5 s; then the old one stops accepting, finishes the requests in
//!    flight (at most `server.shutdown_timeout`) and exits.
//! 3. A SIGQUIT with no new process waiting changes nothing: one error line, and the process
//!    keeps serving.
//!
//! Each process writes its pid next to the socket once it serves, for the next upgrade.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a process that got SIGQUIT waits for the new process to listen on the socket.
pub const RECEIVER_WAIT: Duration = Duration::from_secs(5);

/// Where a serving process writes its pid: the upgrade socket's path with `.pid` appended.
pub fn pid_file(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".pid");
    PathBuf::from(p)
}

/// Records this process as the one the next `run --upgrade` takes over from.
pub fn write_pid(socket: &Path) {
    let path = pid_file(socket);
    if let Err(e) = std::fs::write(&path, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file; `run --upgrade` will not find this process");
    }
}

/// Asks the running process (from the pid file) to hand its sockets over; returns its pid.
pub fn ask_running(socket: &Path) -> Result<u32, String> {
    let path = pid_file(socket);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no running instance to take over: cannot read {}: {e} (is one running on this \
             configuration's listeners?)",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a pid: {:?}", path.display(), text.trim()))?;
    if pid <= 0 || u32::try_from(pid).ok() == Some(std::process::id()) {
        return Err(format!("{}: not another process: {pid}", path.display()));
    }
    // A pid file outlives its process: never signal a process that is not a hubify-edge.
    if !is_router(pid) {
        return Err(format!(
            "no running instance to take over: process {pid} (from {}) is not a hubify-edge",
            path.display()
        ));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGQUIT,
    )
    .map_err(|e| format!("cannot signal process {pid} (from {}): {e}", path.display()))?;
    Ok(pid.unsigned_abs())
}

/// Whether process `pid` runs a hubify-edge binary (its executable's file name, from /proc).
fn is_router(pid: i32) -> bool {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let Ok(theirs) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    // A binary replaced on disk shows as "<path> (deleted)".
    let theirs = name(&theirs).map(|n| n.trim_end_matches(" (deleted)").to_owned());
    let ours = std::env::current_exe().ok().and_then(|p| name(&p));
    theirs.is_some() && theirs == ours
}

/// Whether some process listens on the Unix socket `path` now (from /proc/net/unix: a
/// listening socket has the `__SO_ACCEPTCON` flag, 00010000). A leftover socket file with
/// nobody behind it does not count.
pub fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.as_os_str().to_string_lossy();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 8 && cols[7] == want && cols[3] == "00010000"
    })
}

/// Waits (bounded) for a new process to listen on `path`.
pub async fn wait_for_receiver(path: &Path, bound: Duration) -> bool {
    let until = Instant::now() + bound;
    loop {
        if listening(path) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_sits_beside_the_socket() {
        assert_eq!(
            pid_file(Path::new("/tmp/x.sock")),
            PathBuf::from("/tmp/x.sock.pid")
        );
    }

    #[test]
    fn a_listening_unix_socket_is_seen_and_a_leftover_file_is_not() {
        let dir = std::env::temp_dir().join(format!("hubify-upgrade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("u.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        assert!(listening(&path));
        drop(listener);
        assert!(path.exists(), "the socket file stays behind");
        assert!(!listening(&path));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
