//! The HTTP/1.1 layer under `cargo xtask serve`: one thread per connection, keep-alive, request
//! heads parsed by `httparse`, bodies framed by Content-Length.
//!
//! It replaces `tiny_http`, whose connection pool can queue a new connection behind live
//! keep-alive ones when several arrive at once (its accept thread counts an idle worker that
//! has already been handed a connection). Chromium opens six connections for the page's first
//! load, and a CI run saw the seventh request wait 120 s for a worker; a thread per
//! connection cannot starve.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The parts of a request the file server looks at.
pub struct Request {
    pub method: String,
    pub target: String,
    headers: Vec<(String, String)>,
    /// The client will send another request on this connection.
    keep_alive: bool,
    /// A body follows the head (no route takes one).
    has_body: bool,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Body {
    Bytes(Arc<Vec<u8>>),
    File(std::fs::File, u64),
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, len) => *len,
        }
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, body: Body) -> Response {
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

/// Largest request head accepted (a browser's is under 2 KB).
const MAX_HEAD: usize = 32 * 1024;
/// How long an idle keep-alive connection is kept.
const IDLE: Duration = Duration::from_secs(60);

/// Accepts connections forever, each on its own thread; `handle` answers one request and
/// `log` hears (request, status, body bytes, time taken) for each.
pub fn serve<H, L>(listener: TcpListener, handle: H, log: L) -> io::Result<()>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
    L: Fn(&Request, u16, u64, Duration) + Send + Sync + 'static,
{
    let (handle, log) = (Arc::new(handle), Arc::new(log));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (handle, log) = (handle.clone(), log.clone());
        std::thread::spawn(move || {
            // A client that goes away mid-response is not the server's error.
            let _ = connection(stream, &*handle, &*log);
        });
    }
    Ok(())
}

fn connection(
    mut stream: TcpStream,
    handle: &dyn Fn(&Request) -> Response,
    log: &dyn Fn(&Request, u16, u64, Duration),
) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let Some((request, head_len)) = read_head(&mut stream, &mut buf)? else {
            return Ok(());
        };
        buf.drain(..head_len);
        let started = Instant::now();
        let response = if request.has_body {
            // No route takes a body; not reading it means the connection cannot continue.
            plain(400, "bad request")
        } else {
            handle(&request)
        };
        let keep_alive = request.keep_alive && !request.has_body;
        let (status, len) = (response.status, response.body.len());
        write_response(&mut stream, response, keep_alive, request.method == "HEAD")?;
        log(&request, status, len, started.elapsed());
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads until a whole request head is in `buf`; None when the client closed or went idle.
/// Malformed heads get a 400 and close the connection.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<(Request, usize)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let mut request = Request {
                    method: parsed.method.unwrap_or_default().to_string(),
                    target: parsed.path.unwrap_or_default().to_string(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect(),
                    keep_alive: false,
                    has_body: false,
                };
                let connection = request.header("Connection").unwrap_or_default().to_ascii_lowercase();
                request.keep_alive = match parsed.version {
                    Some(1) => !connection.contains("close"),
                    _ => connection.contains("keep-alive"),
                };
                request.has_body = request.header("Content-Length").is_some_and(|n| n.trim() != "0")
                    || request.header("Transfer-Encoding").is_some();
                return Ok(Some((request, head_len)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => {
                write_response(stream, plain(400, "bad request"), false, false)?;
                return Ok(None);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A short text response.
pub fn plain(status: u16, text: &str) -> Response {
    let mut r = Response::new(status, Body::Bytes(Arc::new(text.as_bytes().to_vec())));
    r.header("Content-Type", "text/plain; charset=utf-8");
    r
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "",
    }
}

/// Writes the head and, unless `head_only` (a HEAD request) or a 304, the body.
fn write_response(stream: &mut TcpStream, response: Response, keep_alive: bool, head_only: bool) -> io::Result<()> {
    // 304 and HEAD answers carry the headers of the body they stand for, but no body.
    let send_body = response.status != 304 && !head_only;
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status));
    for (name, value) in &response.headers {
        head += &format!("{name}: {value}\r\n");
    }
    if response.status != 304 {
        head += &format!("Content-Length: {}\r\n", response.body.len());
    }
    head += if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    };
    let mut out = io::BufWriter::with_capacity(64 * 1024, stream);
    out.write_all(head.as_bytes())?;
    if send_body {
        match response.body {
            Body::Bytes(bytes) => out.write_all(&bytes)?,
            Body::File(file, len) => {
                io::copy(&mut file.take(len), &mut out)?;
            }
        }
    }
    out.flush()
}
