//! `cargo xtask serve` as a browser sees it: only 127.0.0.1, the page with its
//! Content-Security-Policy, correct MIME types, gzip, ETag revalidation, and no way out of the
//! served folders however the path is spelled; as a hostile client sees it: other Host names,
//! smuggled bodies, oversized heads and hundreds of idle or slow connections get nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["serve", "--no-build", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("Itera-Lite Playground: http://")
        .trim_end_matches('/');
    assert!(addr.starts_with("127.0.0.1:"), "listens on loopback only: {line}");
    Server(child, addr.to_string())
}

/// Sends one raw request (paths exactly as written: no client-side normalisation).
fn get(server: &Server, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(&server.1).unwrap();
    // HTTP/1.0: whole bodies, no chunked encoding to undo.
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {}\r\n{extra}Connection: close\r\n\r\n",
        server.1
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

#[test]
fn path_traversal_is_refused_in_every_spelling() {
    let server = start();
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/weights/../../Cargo.toml",
        "/weights/..%2f..%2fCargo.toml",
        "/pkg/%2e%2e/%2e%2e/Cargo.toml",
        "/..%5cCargo.toml",
        "/%252e%252e/Cargo.toml",
        "/.git/config",
        "/Cargo.toml",
    ] {
        let (status, _, body) = get(&server, path, "");
        assert!((400..=404).contains(&status), "{path} → {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("[workspace]"),
            "{path} leaked Cargo.toml"
        );
    }
}

#[test]
fn the_page_comes_with_its_policy_and_types() {
    let server = start();
    let (status, head, body) = get(&server, "/", "");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("Itera-Lite Playground"));
    assert_eq!(header(&head, "Content-Type"), Some("text/html; charset=utf-8"));
    let csp = header(&head, "Content-Security-Policy").expect("a CSP");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("'wasm-unsafe-eval'"),
        "{csp}"
    );
    assert_eq!(header(&head, "X-Content-Type-Options"), Some("nosniff"));
    let (status, head, _) = get(&server, "/weights/tokenizer.json", "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "Content-Type"), Some("application/json"));
    let (_, head, _) = get(&server, "/worker.js", "");
    assert_eq!(header(&head, "Content-Type"), Some("text/javascript; charset=utf-8"));
    let tag = header(&head, "ETag").expect("an ETag").to_string();
    let (status, _, body) = get(&server, "/worker.js", &format!("If-None-Match: {tag}\r\n"));
    assert_eq!((status, body.len()), (304, 0));
    let plain = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../weights/tokenizer.json")).unwrap();
    let (status, head, body) = get(&server, "/weights/tokenizer.json", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "Content-Encoding"), Some("gzip"));
    assert_eq!(
        header(&head, "X-Decoded-Length"),
        Some(plain.len().to_string().as_str())
    );
    assert!(body.len() * 3 < plain.len(), "{} gzipped bytes", body.len());
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);
}

/// Reads one response from a kept-alive connection: the head, then Content-Length bytes.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a response before the read timeout");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head += &line;
    }
    let status = head.split_whitespace().nth(1).expect("a status line").parse().unwrap();
    let len: usize = header(&head, "Content-Length").map_or(0, |n| n.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, head, body)
}

/// A browser opens several connections at once and keeps them alive (Chromium: six for the
/// page's first load): every connection is answered at once, each for several requests in turn.
#[test]
fn concurrent_keep_alive_connections_are_all_answered() {
    let server = start();
    let expected = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/style.css")).unwrap();
    let mut connections: Vec<BufReader<TcpStream>> = (0..12)
        .map(|_| {
            let s = TcpStream::connect(&server.1).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
            BufReader::new(s)
        })
        .collect();
    for round in 0..3 {
        for c in &mut connections {
            write!(
                c.get_mut(),
                "GET /style.css HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n\r\n",
                server.1
            )
            .unwrap();
        }
        for (i, c) in connections.iter_mut().enumerate() {
            let (status, head, body) = read_response(c);
            assert_eq!(status, 200, "connection {i}, round {round}");
            assert_ne!(header(&head, "Connection"), Some("close"));
            assert_eq!(body, expected, "connection {i}, round {round}");
        }
    }
    // HEAD: the headers of the body, without it; a request with a body is refused and closed.
    let c = &mut connections[0];
    write!(c.get_mut(), "HEAD /style.css HTTP/1.1\r\nHost: {}\r\n\r\n", server.1).unwrap();
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        c.read_line(&mut head).unwrap();
    }
    assert_eq!(
        header(&head, "Content-Length"),
        Some(expected.len().to_string().as_str())
    );
    write!(
        c.get_mut(),
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\n\r\nabc",
        server.1
    )
    .unwrap();
    let (status, head, _) = read_response(c);
    assert_eq!((status, header(&head, "Connection")), (400, Some("close")));
}

/// Sends `raw` as it is and reads whatever comes back until the server closes.
fn exchange(server: &Server, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(&server.1).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A name that is not this server (DNS rebinding), a body smuggled under two lengths, an
/// oversized head, a garbage request line: each is refused, and none is answered with a file.
#[test]
fn hostile_requests_are_refused_with_a_status_that_says_why() {
    let server = start();
    let port = server.1.rsplit(':').next().unwrap().to_string();
    let cases: Vec<(String, u16)> = vec![
        ("GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n".into(), 403),
        (format!("GET / HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n"), 403),
        ("GET / HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n".into(), 403),
        ("GET / HTTP/1.0\r\n\r\n".into(), 403),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
                server.1
            ),
            400,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                server.1
            ),
            400,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\n\r\n",
                server.1,
                "a".repeat(20_000)
            ),
            431,
        ),
        ("GARBAGE\r\n\r\n".into(), 400),
        (
            format!("DELETE / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.1),
            405,
        ),
    ];
    for (raw, want) in cases {
        let answer = exchange(&server, raw.as_bytes());
        let shown = &raw[..raw.len().min(80)];
        assert_eq!(status_of(&answer), want, "{shown:?} → {answer:.200}");
        assert!(
            !answer.contains("Itera-Lite Playground"),
            "{shown:?} was served the page"
        );
    }
}

/// The bounded load test: hundreds of connections that send nothing or a byte at a time are
/// held open while ordinary GETs are answered promptly, and the server stays up. Bounded in
/// count (400 held, 60 GETs) and time (the slow senders stop after 4 s).
#[test]
fn idle_and_slow_connections_do_not_starve_ordinary_requests() {
    use std::time::{Duration, Instant};
    const IDLE: usize = 300;
    const SLOW: usize = 100;
    const GETS: usize = 60;
    let mut server = start();
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| TcpStream::connect(&server.1).unwrap()).collect();
    let slow: Vec<TcpStream> = (0..SLOW).map(|_| TcpStream::connect(&server.1).unwrap()).collect();
    let trickle = std::thread::spawn(move || {
        let head = b"GET /style.css HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        let started = Instant::now();
        let mut slow = slow;
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(4) {
            let byte = head.get(i).copied().unwrap_or(b'a');
            for s in &mut slow {
                let _ = s.write_all(&[byte]);
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        slow
    });
    let expected = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/style.css")).unwrap();
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    for _ in 0..GETS {
        let asked = Instant::now();
        let (status, _, body) = get(&server, "/style.css", "");
        let took = asked.elapsed();
        assert_eq!((status, body.len()), (200, expected.len()));
        worst = worst.max(took);
        total += took;
        std::thread::sleep(Duration::from_millis(20));
    }
    let slow = trickle.join().unwrap();
    println!(
        "load: {IDLE} idle + {SLOW} byte-at-a-time connections held; {GETS} GETs, mean {:.1} ms, worst {:.1} ms",
        total.as_secs_f64() * 1e3 / GETS as f64,
        worst.as_secs_f64() * 1e3
    );
    // Generous for a busy 2-core machine; a starved server takes seconds (the head timeout).
    assert!(worst < Duration::from_secs(2), "worst GET took {worst:?}");
    assert!(server.0.try_wait().unwrap().is_none(), "the server exited under load");
    drop((idle, slow));
    let (status, _, _) = get(&server, "/", "");
    assert_eq!(status, 200);
}
