//! `e2e-probe`: a tiny server the runner's own scenario tests run as a pod
//! (image `…/e2e-probe`), to look at the pod from the inside.
//!
//! `GET /healthz`, `/env` (`K=V` lines), `/hostname`, `/file/<absolute path>`,
//! `/whoami` (a SelfSubjectReview with the in-cluster config: the pod's own token),
//! `/write/<absolute path>` (creates the file: 200, or 500 with the error, such as a
//! read-only file system), `/exit/<code>` (answers, then exits). Listens on `--listen` (default `0.0.0.0:8080`).
//! SIGTERM exits 0 unless `PROBE_IGNORE_SIGTERM=1`; every request and signal is logged
//! to stdout.

use std::net::SocketAddr;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "0.0.0.0:8080".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or_else(|| anyhow::anyhow!("--listen needs a value"))?.parse()?,
            other => println!("probe: argument {other}"),
        }
    }
    let listener = TcpListener::bind(listen).await?;
    println!("probe: listening on {listen} pid {}", std::process::id());
    let ignore_term = std::env::var("PROBE_IGNORE_SIGTERM").is_ok_and(|v| v == "1");
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    if let Err(e) = serve(stream).await {
                        println!("probe: {e:#}");
                    }
                });
            }
            _ = term.recv() => {
                println!("probe: SIGTERM{}", if ignore_term { " (ignored)" } else { "" });
                if !ignore_term {
                    return Ok(());
                }
            }
        }
    }
}

async fn serve(mut s: TcpStream) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
    println!("probe: GET {path}");
    let (status, body, exit) = route(&path).await;
    let resp = format!("HTTP/1.0 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await?;
    if let Some(code) = exit {
        println!("probe: exiting with {code}");
        std::process::exit(code);
    }
    Ok(())
}

async fn route(path: &str) -> (&'static str, String, Option<i32>) {
    const OK: &str = "200 OK";
    const NOT_FOUND: &str = "404 Not Found";
    const ERROR: &str = "500 Internal Server Error";
    if path == "/healthz" {
        return (OK, "ok".into(), None);
    }
    if path == "/env" {
        let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}\n")).collect();
        vars.sort();
        return (OK, vars.concat(), None);
    }
    if path == "/hostname" {
        return match std::fs::read_to_string("/proc/sys/kernel/hostname") {
            Ok(h) => (OK, h.trim().to_owned(), None),
            Err(e) => (ERROR, e.to_string(), None),
        };
    }
    if let Some(file) = path.strip_prefix("/file") {
        return match std::fs::read_to_string(file) {
            Ok(t) => (OK, t, None),
            Err(e) => (NOT_FOUND, format!("{file}: {e}"), None),
        };
    }
    if let Some(file) = path.strip_prefix("/write") {
        return match std::fs::write(file, b"written by e2e-probe\n") {
            Ok(()) => (OK, format!("{file}: written"), None),
            Err(e) => (ERROR, format!("{file}: {e}"), None),
        };
    }
    if path == "/whoami" {
        return match whoami().await {
            Ok(u) => (OK, u, None),
            Err(e) => (ERROR, format!("{e:#}"), None),
        };
    }
    if let Some(code) = path.strip_prefix("/exit/") {
        return (OK, "bye".into(), Some(code.parse().unwrap_or(1)));
    }
    (NOT_FOUND, "no such route".into(), None)
}

/// The username the apiserver sees for this process's in-cluster credentials.
async fn whoami() -> anyhow::Result<String> {
    let client = kube::Client::try_default().await?;
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
    }))?;
    let got = Api::<SelfSubjectReview>::all(client).create(&PostParams::default(), &review).await?;
    got.status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| anyhow::anyhow!("no user in the SelfSubjectReview"))
}
