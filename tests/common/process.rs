//! Servers the tests start themselves (engines, Spin, Distribution): free loopback ports, waiting
//! for readiness by polling a condition, stopping by PID.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Fail, saying so, when the file system holding `path` has less than `bytes` free: a test that
/// moves gigabytes would otherwise fail halfway with a client's "no space left on device".
pub fn assert_free_disk(path: &Path, bytes: u64) {
    let output = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().expect("df runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let free: u64 =
        text.lines().nth(1).and_then(|line| line.trim().parse().ok()).unwrap_or_else(|| panic!("df said {text:?}"));
    assert!(
        free >= bytes,
        "{} has {:.1} GiB free; this test needs {:.1} GiB (remove old test or CI copies from it)",
        path.display(),
        free as f64 / (1u64 << 30) as f64,
        bytes as f64 / (1u64 << 30) as f64
    );
}

/// Stop `child` with SIGTERM, give it `grace` to exit, then SIGKILL; always reaps it.
pub fn stop_by_pid(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

/// `promtool check metrics` (Debian's prometheus package) on an exposition: panics with what it
/// says when it finds a problem.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write as _;
    super::clients::ensure_installed("promtool");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Poll `ready` until it holds; panic with `what` (and the server's log) at the deadline.
pub fn wait_until(what: &str, timeout: Duration, log: &Path, child: &mut Child, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what}: exited with {status}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not ready after {timeout:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
