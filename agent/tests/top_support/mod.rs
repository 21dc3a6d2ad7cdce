//! `azflow top` as a person sees it: a tmux session on a private server (send-keys,
//! capture-pane), and the table read back from the screen by column *meaning* rather than
//! position, so a view that gains columns (RTT per AZ, …) or indented detail lines still reads.

use std::{
    process::Command,
    time::{Duration, Instant},
};

/// One workload row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub workload: String,
    pub kind: String,
    /// The first "<number> <B|kB|MB|GB>" after the kind: cross-AZ bytes/s.
    pub cross_rate: Option<f64>,
    /// The first "<number>%": the same-AZ share.
    pub affinity: Option<f64>,
}

/// The table's rows, top to bottom: the lines after the header (first word `WORKLOAD`) up to
/// the first empty line; lines that start with a space are details of the row above.
pub fn table(screen: &str) -> Vec<Row> {
    screen
        .lines()
        .skip_while(|l| l.split_whitespace().next() != Some("WORKLOAD"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(row)
        .collect()
}

fn row(line: &str) -> Option<Row> {
    let t: Vec<&str> = line.split_whitespace().collect();
    let (workload, kind) = (t.first()?, t.get(1)?);
    let cross_rate = t.windows(2).skip(2).find_map(|w| {
        let mult = match w[1] {
            "B" => 1.0,
            "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => return None,
        };
        w[0].parse::<f64>().ok().map(|v| v * mult)
    });
    let affinity = t
        .iter()
        .find_map(|w| w.strip_suffix('%')?.parse::<f64>().ok())
        .map(|p| p / 100.0);
    Some(Row {
        workload: (*workload).to_owned(),
        kind: (*kind).to_owned(),
        cross_rate,
        affinity,
    })
}

pub fn names(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.workload.as_str()).collect()
}

/// `rows`' names that are in `ours`, in screen order (the agent may show `host` and `other`).
pub fn ours<'a>(rows: &'a [Row], ours: &[&str]) -> Vec<&'a str> {
    names(rows)
        .into_iter()
        .filter(|n| ours.contains(n))
        .collect()
}

/// A tmux session on a server of its own (`-L`), so nothing else on the machine sees or
/// disturbs it; the server is killed on drop, however the test ends.
pub struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// Runs `command` in a detached `width`×`height` session.
    pub fn start(name: &str, command: &str, width: u16, height: u16) -> Tmux {
        let t = Tmux {
            socket: format!("azflow-{name}-{}", std::process::id()),
            session: name.to_owned(),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("tmux: {e}"))
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["capture-pane", "-p", "-t", &self.session])
                .stdout,
        )
        .into_owned()
    }

    /// Waits until the screen satisfies `want`, returning it.
    pub fn wait_for(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if want(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the session has ended (its command exited).
    pub fn wait_gone(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self
            .run(&["has-session", "-t", &self.session])
            .status
            .success()
        {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn rows_read_by_meaning_not_position() {
    let screen = [
        "azflow top — x — sort: cross-AZ bytes/s — filter: -",
        "WORKLOAD    KIND     CROSS-AZ B/s  $/DAY  AFFINITY  RTT b p50",
        "web.service systemd  2.1 MB        1.69   0.0%      0.210 ms",
        "  us-test-1b p50 0.2 ms",
        "shop/cart   pod      630.0 kB      0.51   75.2%",
        "host        host     0 B           0.00   -",
        "",
        "keys: s sort",
    ]
    .join("\n");
    let rows = table(&screen);
    assert_eq!(names(&rows), ["web.service", "shop/cart", "host"]);
    let near =
        |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-9 * want.max(1.0));
    assert!(near(rows[0].cross_rate, 2.1e6), "{rows:?}");
    assert!(near(rows[1].affinity, 0.752), "{rows:?}");
    assert_eq!((rows[2].cross_rate, rows[2].affinity), (Some(0.0), None));
    assert_eq!(
        ours(&rows, &["shop/cart", "web.service"]),
        ["web.service", "shop/cart"]
    );
}
