//! The HTTP layer under `cargo xtask serve`: hyper's HTTP/1.1 server on tokio, with limits on
//! what a client may hold. The file logic (`web::respond`) stays synchronous and runs on
//! tokio's blocking pool; this module only frames, bounds and refuses.
//!
//! - request heads: at most `MAX_HEAD` bytes; a head must arrive within `Limits::head_timeout`,
//!   which also closes a keep-alive connection idle that long and a client that sends its head
//!   a byte at a time;
//! - a socket that accepts no bytes of a response for `Limits::write_timeout` is dropped;
//! - at most `Limits::max_connections` at once (a further one waits to be accepted);
//! - the Host must be the loopback address or localhost (a DNS-rebound name is refused, so a
//!   page elsewhere cannot read what is served here); requests with a body are refused;
//! - Ctrl-C or SIGTERM stop accepting and let answers in flight finish (at most `Limits::drain`).

use std::future::Future;
use std::net::TcpListener;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

/// The parts of a request the file server looks at.
pub struct Request {
    pub method: String,
    pub target: String,
    headers: hyper::HeaderMap,
}

impl Request {
    /// A header's value, by case-insensitive name (None when absent or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16, body: Bytes) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(&mut self, name: &'static str, value: impl Into<String>) {
        self.headers.push((name, value.into()));
    }
}

/// A short text response.
pub fn plain(status: u16, text: &str) -> Response {
    let mut r = Response::new(status, Bytes::copy_from_slice(text.as_bytes()));
    r.header("Content-Type", "text/plain; charset=utf-8");
    r
}

/// Largest request head accepted (a browser's is under 2 KB; hyper's floor is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in one request head.
const MAX_HEADERS: usize = 64;

/// What one client may hold, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a request head may take to arrive, counted from when the connection is idle.
    pub head_timeout: Duration,
    /// How long a client may leave a response unread.
    pub write_timeout: Duration,
    /// Connections served at once (a further one waits to be accepted).
    pub max_connections: usize,
    /// How long a shutdown waits for answers in flight.
    pub drain: Duration,
}

impl Limits {
    /// `cargo xtask serve`'s limits.
    pub const SERVE: Limits = Limits {
        head_timeout: Duration::from_secs(20),
        write_timeout: Duration::from_secs(30),
        max_connections: 1024,
        drain: Duration::from_secs(5),
    };
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;
/// Hears (method, target, status, body bytes, time taken) of each answer.
type Logger = dyn Fn(&str, &str, u16, u64, Duration) + Send + Sync;

/// Serves with `Limits::SERVE` until Ctrl-C or SIGTERM; `handle` answers one request (on the
/// blocking pool) and `log` hears each answer.
pub fn serve<H, L>(listener: TcpListener, handle: H, log: L) -> std::io::Result<()>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
    L: Fn(&str, &str, u16, u64, Duration) + Send + Sync + 'static,
{
    serve_until(listener, Limits::SERVE, handle, log, shutdown_signal())
}

/// Serves under `limits` until `stop` completes, then lets answers in flight finish.
pub fn serve_until<H, L>(
    listener: TcpListener,
    limits: Limits,
    handle: H,
    log: L,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
    L: Fn(&str, &str, u16, u64, Duration) + Send + Sync + 'static,
{
    let (handle, log): (Arc<Handler>, Arc<Logger>) = (Arc::new(handle), Arc::new(log));
    listener.set_nonblocking(true)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(accept_loop(listener, limits, handle, log, stop))
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    handle: Arc<Handler>,
    log: Arc<Logger>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let mut stop = pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue, // out of descriptors for a moment, a reset before accept: next
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let (handle, log) = (handle.clone(), log.clone());
        let service = service_fn(move |request| answer(request, port, handle.clone(), log.clone()));
        let connection = http.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-response is not the server's error.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain) => {}
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Whether `host` (a Host header) names this server: 127.0.0.1, localhost or [::1], with this
/// port or none.
pub fn is_loopback_host(host: &str, port: u16) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, p)) if !name.ends_with(':') && !host.ends_with(']') => {
            if p.parse() != Ok(port) {
                return false;
            }
            name
        }
        _ => host,
    };
    matches!(name.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "[::1]")
}

async fn answer(
    request: hyper::Request<Incoming>,
    port: u16,
    handle: Arc<Handler>,
    log: Arc<Logger>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let started = Instant::now();
    let has_body = request.headers().contains_key(hyper::header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|n| n.as_bytes().trim_ascii() != b"0");
    let host_ok = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| is_loopback_host(h, port));
    let (parts, _body) = request.into_parts();
    let request = Request {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        headers: parts.headers,
    };
    let (method, target) = (request.method.clone(), request.target.clone());
    let (response, close) = if !host_ok {
        (plain(403, "this server answers only for 127.0.0.1 and localhost"), true)
    } else if has_body {
        // No route takes a body; refusing without reading it ends the connection.
        (plain(400, "bad request: no route takes a body"), true)
    } else {
        match tokio::task::spawn_blocking(move || handle(&request)).await {
            Ok(r) => (r, false),
            Err(_) => (plain(500, "the file server failed"), true),
        }
    };
    log(
        &method,
        &target,
        response.status,
        response.body.len() as u64,
        started.elapsed(),
    );
    Ok(to_hyper(response, close))
}

fn to_hyper(r: Response, close: bool) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::new(Full::new(r.body));
    *out.status_mut() = hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    for (name, value) in r.headers {
        // from_bytes takes `web.rs`'s usual spelling ("Content-Type") and lower-cases it.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.append(name, value);
        }
    }
    if close {
        headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::thread::JoinHandle;

    /// A server on a free loopback port under `limits`, answering "ok" after `delay`; stopped
    /// (and joined) by the returned function.
    fn start(limits: Limits, delay: Duration) -> (String, impl FnOnce() -> Duration) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server: JoinHandle<std::io::Result<()>> = std::thread::spawn(move || {
            let handle = move |_: &Request| {
                std::thread::sleep(delay);
                plain(200, "ok")
            };
            serve_until(listener, limits, handle, |_, _, _, _, _| {}, async {
                let _ = rx.await;
            })
        });
        let stop = move || {
            let asked = Instant::now();
            tx.send(()).unwrap();
            server.join().unwrap().unwrap();
            asked.elapsed()
        };
        (addr, stop)
    }

    fn connect(addr: &str) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn get(s: &mut TcpStream, addr: &str) {
        write!(s, "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    }

    fn read_all(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    }

    const QUICK: Limits = Limits {
        head_timeout: Duration::from_millis(600),
        write_timeout: Duration::from_secs(5),
        max_connections: 2,
        drain: Duration::from_secs(5),
    };

    #[test]
    fn idle_and_byte_at_a_time_clients_are_closed_after_the_head_timeout() {
        let (addr, stop) = start(QUICK, Duration::ZERO);
        let mut idle = connect(&addr);
        let mut slow = connect(&addr);
        let opened = Instant::now();
        for b in b"GET / HT" {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for s in [&mut idle, &mut slow] {
            let answer = read_all(s);
            assert!(!answer.contains(" 200 "), "{answer}");
        }
        let took = opened.elapsed();
        assert!(took >= QUICK.head_timeout && took < QUICK.head_timeout * 5, "{took:?}");
        // Both slots are free again: an ordinary request is answered.
        let mut s = connect(&addr);
        get(&mut s, &addr);
        assert!(read_all(&mut s).starts_with("HTTP/1.1 200 OK"));
        stop();
    }

    #[test]
    fn a_connection_beyond_the_cap_waits_for_a_free_slot() {
        let limits = Limits {
            head_timeout: Duration::from_secs(30),
            ..QUICK
        };
        let (addr, stop) = start(limits, Duration::ZERO);
        let held: Vec<TcpStream> = (0..limits.max_connections).map(|_| connect(&addr)).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut waiting = connect(&addr);
        waiting.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        get(&mut waiting, &addr);
        let mut byte = [0u8; 1];
        let early = waiting.read(&mut byte);
        assert!(early.is_err(), "answered while every slot was held: {early:?}");
        drop(held);
        waiting.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(read_all(&mut waiting).starts_with("HTTP/1.1 200 OK"));
        stop();
    }

    #[test]
    fn shutdown_lets_the_answer_in_flight_finish() {
        let (addr, stop) = start(QUICK, Duration::from_millis(400));
        let mut s = connect(&addr);
        get(&mut s, &addr);
        std::thread::sleep(Duration::from_millis(100));
        let took = stop();
        let answer = read_all(&mut s);
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok"),
            "{answer}"
        );
        assert!(took < QUICK.drain, "{took:?}");
        assert!(TcpStream::connect(&addr).is_err(), "still accepting after shutdown");
    }

    #[test]
    fn only_loopback_names_are_this_server() {
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "LOCALHOST",
            "[::1]:8000",
            "[::1]",
            "127.0.0.1",
        ] {
            assert!(is_loopback_host(ok, 8000), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8000",
            "127.0.0.1:8001",
            "localhost.evil.example:8000",
            "127.0.0.2:8000",
            "",
            "[::1]:80",
        ] {
            assert!(!is_loopback_host(bad, 8000), "{bad}");
        }
    }
}
