//! `switchyard dev` refuses to expose its open token endpoint by accident.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_non_loopback_bind_needs_the_explicit_flag() {
    // Ports nothing else uses; the process must exit before it binds any of them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["dev", "--bind", "0.0.0.0", "--port", "17980", "--udp-port", "17982", "--turn-port", "17985"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("`switchyard dev --bind 0.0.0.0` started serving /dev/token to the network");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("--allow-lan-tokens") && stderr.contains("/dev/token"), "{stderr}");
}
