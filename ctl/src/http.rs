//! A tiny blocking HTTP/1.1 client for the admin API: plain `http://` only (the API listens on
//! loopback by default), one request per connection, `Content-Length` or chunked bodies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// `http://host:port[/prefix]` split into the address and the path prefix.
#[derive(Debug, Clone)]
pub struct Base {
    host: String,
    prefix: String,
}

impl Base {
    /// Parses the server URL.
    pub fn parse(url: &str) -> anyhow::Result<Base> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported (the admin API is meant for loopback)"))?;
        let (host, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            bail!("{url}: no host");
        }
        let host = if host.contains(':') && !host.ends_with(']') { host.to_string() } else { format!("{host}:80") };
        Ok(Base { host, prefix: prefix.to_string() })
    }

    /// The server as given (for messages).
    pub fn show(&self) -> String {
        format!("http://{}{}", self.host, self.prefix)
    }

    /// Sends `method path` with an optional JSON body and reads the whole response.
    pub fn request_with(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> anyhow::Result<Response> {
        let server = self.show();
        let addrs: Vec<_> = self
            .host
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {server}"))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = match stream {
            Some(s) => s,
            None => {
                let why = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
                bail!("cannot reach the Switchyard server at {server}: {why} (is it running? set --url or SWITCHYARD_URL)")
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let content_type = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
        let req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{content_type}Content-Length: {}\r\nConnection: close\r\nUser-Agent: switchyardctl\r\n\r\n{body}",
            self.prefix,
            self.host,
            body.len()
        );
        stream.write_all(req.as_bytes()).with_context(|| format!("sending to {server}"))?;
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line).with_context(|| format!("reading from {server}"))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("{server} did not answer HTTP (status line {line:?})"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                break;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse::<usize>().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| anyhow!("bad chunk size {line:?} from {server}"))?;
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
        }
        Ok(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
    }

    /// A request whose 2xx answer is JSON; other statuses become errors carrying the server's message.
    pub fn json(&self, method: &str, path: &str) -> anyhow::Result<serde_json::Value> {
        self.json_with(method, path, None)
    }

    /// Like [`Base::json`], sending `body` as JSON.
    pub fn json_with(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> anyhow::Result<serde_json::Value> {
        let r = self.request_with(method, path, body)?;
        if !(200..300).contains(&r.status) {
            let msg = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| r.body.trim().to_string());
            bail!("{method} {path}: HTTP {}: {msg}", r.status);
        }
        serde_json::from_str(&r.body).with_context(|| format!("{method} {path}: the answer is not JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let b = Base::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!((b.host.as_str(), b.prefix.as_str()), ("127.0.0.1:8080", ""));
        let b = Base::parse("http://example.org/sy").unwrap();
        assert_eq!((b.host.as_str(), b.prefix.as_str()), ("example.org:80", "/sy"));
        assert!(Base::parse("https://x").is_err());
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        // Port 1 on loopback: nothing listens there.
        let err = Base::parse("http://127.0.0.1:1").unwrap().json("GET", "/api/rooms").unwrap_err().to_string();
        assert!(err.contains("cannot reach the Switchyard server at http://127.0.0.1:1"), "{err}");
    }
}
