//! `switchyard room` against a real `switchyard dev`: create, list, get, update, delete,
//! a refusal that names its cause, and JSON output.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "devkey";
const SECRET: &str = "room-cli-test-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `switchyard dev` on free ports; killed when dropped.
struct Dev {
    child: Child,
    url: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev() -> Dev {
    let (port, udp) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["dev", "--port", &port.to_string(), "--udp-port", &udp.to_string(), "--turn-port", "0"])
        .args(["--api-key", KEY, "--api-secret", SECRET])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Dev { child, url: format!("http://127.0.0.1:{port}") };
    let started = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.contains(" 200 ") {
                return dev;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "switchyard dev did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn room(dev: &Dev, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("room")
        .args(args)
        .env("SWITCHYARD_URL", &dev.url)
        .env("SWITCHYARD_API_KEY", KEY)
        .env("SWITCHYARD_API_SECRET", SECRET)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn rooms_are_created_listed_updated_and_deleted_from_the_command_line() {
    let dev = start_dev();
    let created = ok(&room(&dev, &["create", "standup", "--max-participants", "4", "--empty-timeout", "2m"]));
    let header = created.lines().next().unwrap();
    assert!(header.starts_with("NAME") && header.contains("PARTICIPANTS"), "{created}");
    assert!(created.lines().nth(1).unwrap().starts_with("standup"), "{created}");
    assert!(created.contains("120s"), "{created}");

    let again = room(&dev, &["create", "standup"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("HTTP 409") && stderr.contains("room_exists"), "{stderr}");

    ok(&room(&dev, &["create", "retro", "--codec", "vp9", "--codec", "opus"]));
    let json: serde_json::Value = serde_json::from_str(&ok(&room(&dev, &["list", "-o", "json"]))).unwrap();
    let names: Vec<&str> = json["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["retro", "standup"]);
    let only = ok(&room(&dev, &["list", "retro"]));
    assert_eq!(only.lines().count(), 2, "{only}");

    let updated = ok(&room(&dev, &["update", "standup", "--metadata", "agenda", "-o", "json"]));
    let updated: serde_json::Value = serde_json::from_str(&updated).unwrap();
    assert_eq!(updated["metadata"], "agenda");
    let got: serde_json::Value = serde_json::from_str(&ok(&room(&dev, &["get", "standup", "-o", "json"]))).unwrap();
    assert_eq!((got["metadata"].as_str(), got["maxParticipants"].as_u64()), (Some("agenda"), Some(4)));
    let none = ok(&room(&dev, &["participants", "standup"]));
    assert_eq!(none.lines().count(), 1, "only the header: {none}");

    assert!(ok(&room(&dev, &["delete", "standup"])).contains("deleted"));
    let gone = room(&dev, &["get", "standup"]);
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(stderr.contains("HTTP 404") && stderr.contains("room_not_found"), "{stderr}");
}

#[test]
fn a_token_without_the_grant_is_refused_with_the_reason() {
    let dev = start_dev();
    let join_only = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--api-key", KEY, "--api-secret", SECRET, "--identity", "alice", "--room", "standup"])
        .output()
        .unwrap();
    let token = String::from_utf8(join_only.stdout).unwrap();
    let out = room(&dev, &["list", "--token", token.trim()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 403") && stderr.contains("roomList") && stderr.contains("missing_grant"), "{stderr}");

    let listed = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--api-key", KEY, "--api-secret", SECRET, "--identity", "ops", "--list"])
        .output()
        .unwrap();
    let token = String::from_utf8(listed.stdout).unwrap();
    assert!(ok(&room(&dev, &["list", "--token", token.trim()])).starts_with("NAME"));

    let wrong = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["room", "list", "--url", &dev.url, "--api-key", KEY, "--api-secret", "not-the-secret"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("HTTP 401") && stderr.contains("bad_signature"), "{stderr}");

    let unreachable = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["room", "list", "--url", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--api-key", KEY, "--api-secret", SECRET])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains("cannot reach"), "{stderr}");
}
