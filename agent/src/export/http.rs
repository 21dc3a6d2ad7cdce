//! A deliberately small HTTP/1.1 server for /metrics, /healthz and /readyz: bounded request
//! size, bounded connections, a deadline per connection, `Connection: close`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

use super::{classic_buckets::ClassicBuckets, prometheus, prometheus_proto, readiness::Readiness};
use crate::snapshot::Snapshot;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const MAX_CONNECTIONS: usize = 64;
const DEADLINE: Duration = Duration::from_secs(10);

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` flips to true.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    readiness: Readiness,
    classic: ClassicBuckets,
    mut shutdown: watch::Receiver<bool>,
) {
    let classic = Arc::new(classic);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("prometheus endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit the connection is closed at once rather than queued without bound.
        let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
        let snapshots = snapshots.clone();
        let readiness = readiness.clone();
        let classic = classic.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(DEADLINE, handle(stream, snapshots, readiness, &classic)).await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    readiness: Readiness,
    classic: &ClassicBuckets,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"").await;
        }
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", b"only GET\n").await;
    }
    let path = target.split('?').next().unwrap_or("");
    let snap = snapshots.borrow().clone();
    match path {
        "/metrics" if accept(&buf).is_some_and(prometheus_proto::accepts) => {
            let body = prometheus_proto::render(&prometheus::families(&snap), classic);
            respond(&mut stream, "200 OK", prometheus_proto::CONTENT_TYPE, &body).await
        }
        "/metrics" => respond(&mut stream, "200 OK", prometheus::CONTENT_TYPE, prometheus::render(&snap, classic).as_bytes()).await,
        "/healthz" => respond(&mut stream, "200 OK", "text/plain", b"ok\n").await,
        "/readyz" => match readiness.check(&snap, std::time::SystemTime::now()) {
            Ok(()) => respond(&mut stream, "200 OK", "text/plain", b"ready\n").await,
            Err(why) => {
                respond(&mut stream, "503 Service Unavailable", "text/plain", format!("not ready: {why}\n").as_bytes()).await
            }
        },
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"try /metrics\n").await,
    }
}

/// The request's `Accept` header, if any.
fn accept(head: &[u8]) -> Option<&str> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("accept").then(|| value.trim())
    })
}

async fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
