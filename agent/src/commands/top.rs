//! `azflow top`: a live view of a running agent's workloads, read from its Prometheus endpoint
//! (`kubectl port-forward` to a DaemonSet pod, or next to the systemd unit). Keys: `s` cycles the
//! sort, `/` starts a filter (Enter ends it, Esc clears it), `q` quits. `--once` prints one table.

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::{Duration, Instant},
};

use clap::Args;

use super::top_view::{self, SortBy};

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// The agent's metrics endpoint: host:port, or http://host:port[/path] (default path /metrics).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub url: String,
    /// Print one table (rates over --interval) and exit.
    #[arg(long)]
    pub once: bool,
    /// Time between scrapes, e.g. "2s".
    #[arg(long, default_value = "2s")]
    pub interval: String,
    /// USD per GB (2^30 bytes) of cross-AZ traffic, each direction.
    #[arg(long, default_value_t = 0.01)]
    pub price_per_gb: f64,
    /// Initial sort: cross, cost, affinity or name.
    #[arg(long, default_value = "cross")]
    pub sort: String,
    /// Initial filter (a substring of the workload or its kind).
    #[arg(long, default_value = "")]
    pub filter: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("{0}")]
    Config(String),
    #[error("reading {url}: {source}")]
    Scrape { url: String, source: std::io::Error },
    #[error("terminal: {0}")]
    Terminal(std::io::Error),
}

struct Endpoint {
    host: String,
    path: String,
}

fn endpoint(url: &str) -> Result<Endpoint, TopError> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.starts_with("https://") || url.starts_with("https://") {
        return Err(TopError::Config("--url: https is not supported; port-forward the agent and pass host:port".into()));
    }
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h.to_string(), format!("/{p}")),
        None => (rest.to_string(), "/metrics".to_string()),
    };
    if host.to_socket_addrs().map(|mut a| a.next().is_none()).unwrap_or(true) {
        return Err(TopError::Config(format!("--url: {url:?} has no reachable host:port; pass e.g. 127.0.0.1:9464")));
    }
    Ok(Endpoint { host, path })
}

fn scrape(e: &Endpoint, url: &str) -> Result<String, TopError> {
    let err = |source| TopError::Scrape { url: url.to_string(), source };
    let addr = e.host.to_socket_addrs().map_err(err)?.next().ok_or_else(|| err(std::io::ErrorKind::NotFound.into()))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(err)?;
    // One write: a server may answer (and close) after the first segment it reads.
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", e.path, e.host);
    s.write_all(request.as_bytes()).map_err(err)?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(err)?;
    let (head, body) = body.split_once("\r\n\r\n").ok_or_else(|| err(std::io::ErrorKind::InvalidData.into()))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(err(std::io::Error::other(head.lines().next().unwrap_or_default().to_string())));
    }
    Ok(body.to_string())
}

pub fn run(args: &TopArgs) -> Result<(), TopError> {
    let e = endpoint(&args.url)?;
    let interval = crate::config::parse_duration(&args.interval)
        .filter(|d| (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(d))
        .ok_or_else(|| TopError::Config(format!("--interval: {:?} is not a duration between 100ms and 1h; write e.g. 2s", args.interval)))?;
    let mut sort = SortBy::parse(&args.sort)
        .ok_or_else(|| TopError::Config(format!("--sort: {:?} is not one of cross, cost, affinity, name", args.sort)))?;
    let mut filter = args.filter.clone();
    let mut before = top_view::parse(&scrape(&e, &args.url)?);
    let mut at = Instant::now();
    if args.once {
        std::thread::sleep(interval);
        // At least one drain after the first scrape (the agent drains every 5 s by default),
        // waiting at most a minute for it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (now, secs) = loop {
            let now = top_view::parse(&scrape(&e, &args.url)?);
            match top_view::elapsed(&before, &now, at.elapsed().as_secs_f64()) {
                Some(secs) => break (now, secs),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                None => {
                    let source = std::io::Error::other("the agent's figures have not changed for a minute (no drain)");
                    return Err(TopError::Scrape { url: args.url.clone(), source });
                }
            }
        };
        let rows = top_view::arrange(top_view::rows(&before, &now, secs, args.price_per_gb), sort, &filter);
        print!("{}", top_view::render(&rows, &top_view::rtt_by_zone(&now), sort, &filter, &args.url));
        return Ok(());
    }
    let _raw = RawTerminal::enter().map_err(TopError::Terminal)?;
    let mut editing = false;
    let mut shown: Option<(Vec<top_view::Sample>, Vec<top_view::Row>)> = None;
    let mut next_scrape = Instant::now() + interval;
    loop {
        if Instant::now() >= next_scrape {
            let now = top_view::parse(&scrape(&e, &args.url)?);
            // No drain since the last figures: keep showing them (and the baseline) as they are.
            if let Some(secs) = top_view::elapsed(&before, &now, at.elapsed().as_secs_f64()) {
                let rows = top_view::rows(&before, &now, secs, args.price_per_gb);
                (before, at) = (now.clone(), Instant::now());
                shown = Some((now, rows));
            }
            next_scrape = Instant::now() + interval;
        }
        let screen = match &shown {
            Some((samples, rows)) => {
                top_view::render(&top_view::arrange(rows.clone(), sort, &filter), &top_view::rtt_by_zone(samples), sort, &filter, &args.url)
            }
            None => format!("azflow top — {} — first rates in {:.0?}…\n", args.url, interval),
        };
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[2J{}", screen.replace('\n', "\r\n"));
        if editing {
            let _ = write!(out, "filter: {filter}");
        }
        let _ = out.flush();
        match read_key(Duration::from_millis(200)) {
            Some(b'q') if !editing => return Ok(()),
            Some(b's') if !editing => sort = sort.next(),
            Some(b'/') if !editing => {
                editing = true;
                filter.clear();
            }
            Some(b'\r' | b'\n') if editing => editing = false,
            Some(0x1b) if editing => {
                editing = false;
                filter.clear();
            }
            Some(0x7f | 0x08) if editing => {
                filter.pop();
            }
            Some(c) if editing && (c.is_ascii_graphic() || c == b' ') => filter.push(c as char),
            _ => {}
        }
    }
}

/// One byte from stdin, waiting at most `timeout`.
fn read_key(timeout: Duration) -> Option<u8> {
    let mut fds = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut fds, 1, timeout.as_millis() as i32) };
    if ready <= 0 {
        return None;
    }
    let mut b = [0u8; 1];
    // SAFETY: reads at most one byte into a valid buffer.
    let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
    (n == 1).then_some(b[0])
}

/// Non-canonical, no-echo input for single keys; restored on drop.
struct RawTerminal(Option<libc::termios>);

impl RawTerminal {
    fn enter() -> std::io::Result<Self> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid termios pointer.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            // Not a terminal (piped): keys are read as they come.
            return Ok(Self(None));
        }
        let saved = t;
        t.c_lflag &= !(libc::ICANON | libc::ECHO);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: as above.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        print!("\x1b[?25l");
        Ok(Self(Some(saved)))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the attributes read in `enter`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
            print!("\x1b[?25h\r\n");
            let _ = std::io::stdout().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_host_port_and_optional_path() {
        let e = endpoint("127.0.0.1:9464").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.host.as_str(), e.path.as_str()), ("127.0.0.1:9464", "/metrics"));
        let e = endpoint("http://127.0.0.1:1/x/metrics").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.path, "/x/metrics");
        assert!(endpoint("https://a:1").is_err());
        assert!(endpoint("nohost").err().is_some_and(|e| e.to_string().starts_with("--url: ")));
    }
}
