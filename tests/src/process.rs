//! Child processes with bounded waits: every wait has a deadline, a child still running when its
//! handle is dropped is killed, and every error names the command and quotes its stderr.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    io::{self, BufRead, BufReader, Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

/// How long a finished child's output pipes may stay open (held by a grandchild, say) before the
/// output collected so far is returned without waiting further.
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A shell-like rendering of a command, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut out = quote(cmd.get_program());
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@[]%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The result of a child that ran to completion.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The rendered command line.
    pub command: String,
    pub status: ExitStatus,
    /// Everything the child printed on stdout that was not already taken with
    /// [`Proc::next_line`].
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Fails, naming the command and quoting its stderr, unless the child exited with status 0.
    pub fn ok(self) -> Result<Finished> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(anyhow!(
                "`{}` failed ({}){}",
                self.command,
                self.status,
                render_output(&self.stdout, &self.stderr)
            ))
        }
    }

    /// The last non-empty stdout line (where the traffic tool puts its JSON result).
    pub fn last_line(&self) -> Option<&str> {
        self.stdout.lines().rev().find(|l| !l.trim().is_empty())
    }
}

fn render_output(stdout: &str, stderr: &str) -> String {
    let mut out = String::new();
    let stderr = stderr.trim_end();
    let stdout = stdout.trim_end();
    if !stderr.is_empty() {
        let _ = write!(out, "\n--- stderr ---\n{stderr}");
    }
    if !stdout.is_empty() {
        let _ = write!(out, "\n--- stdout ---\n{stdout}");
    }
    if out.is_empty() {
        out.push_str(" with no output");
    }
    out
}

/// A running child with its stdout read line by line and its stderr collected in the background.
/// Dropping it kills the child (SIGKILL) and reaps it.
pub struct Proc {
    command: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    reaped: bool,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr piped; `stdin` (if any) is written from a helper thread
    /// and then closed, otherwise stdin is /dev/null.
    pub fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> Result<Proc> {
        let command = describe(&cmd);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error (EPIPE) means the child exited early; its status and stderr tell why.
            thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = child.stdout.take().expect("stdout was configured as piped");
        let stderr = child.stderr.take().expect("stderr was configured as piped");
        let lines = spawn_line_reader(stdout);
        let (err_tx, err_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut buf);
            let _ = err_tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        Ok(Proc {
            command,
            child,
            lines,
            stderr: err_rx,
            reaped: false,
        })
    }

    /// The rendered command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child prints on stdout, waiting at most `timeout`. Fails (with the exit
    /// status and stderr) if the child closes stdout first, or on timeout.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "`{}` printed no line on stdout within {timeout:?}",
                    self.command
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let finished = self.wait_inner(Duration::from_secs(5))?;
                bail!(
                    "`{}` closed stdout ({}) before printing the expected line{}",
                    self.command,
                    finished.status,
                    render_output(&finished.stdout, &finished.stderr)
                )
            }
        }
    }

    /// Waits at most `timeout` for the child to exit; on timeout kills it and fails.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        self.wait_inner(timeout)
    }

    /// Like [`Proc::wait`], then [`Finished::ok`].
    pub fn wait_ok(self, timeout: Duration) -> Result<Finished> {
        self.wait(timeout)?.ok()
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(mut self) -> Result<Finished> {
        self.kill_and_reap()
            .with_context(|| format!("cannot kill `{}`", self.command))?;
        let status = self.child_status()?;
        Ok(self.collect_output(status))
    }

    fn wait_inner(&mut self, timeout: Duration) -> Result<Finished> {
        let status = wait_exit(&mut self.child, timeout)
            .with_context(|| format!("waiting for `{}`", self.command))?;
        match status {
            Some(status) => {
                self.reaped = true;
                Ok(self.collect_output(status))
            }
            None => {
                let _ = self.kill_and_reap();
                let status = self.child_status()?;
                let partial = self.collect_output(status);
                bail!(
                    "`{}` did not finish within {timeout:?}; killed it{}",
                    self.command,
                    render_output(&partial.stdout, &partial.stderr)
                )
            }
        }
    }

    fn child_status(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .with_context(|| format!("reaping `{}`", self.command))
    }

    fn kill_and_reap(&mut self) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        // Kill fails only if the child is already a zombie; wait() then reaps it.
        let _ = self.child.kill();
        self.child.wait()?;
        self.reaped = true;
        Ok(())
    }

    /// Gathers the remaining stdout lines and stderr after the child exited. A grandchild that
    /// inherited the pipes could keep them open, so this waits at most a grace period.
    fn collect_output(&mut self, status: ExitStatus) -> Finished {
        let deadline = Instant::now() + PIPE_DRAIN_GRACE;
        let mut stdout = String::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    stdout.push_str("[stdout still open; stopped reading]\n");
                    break;
                }
            }
        }
        let stderr = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| "[stderr still open; stopped reading]".to_owned());
        Finished {
            command: self.command.clone(),
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_reap() {
            eprintln!("azflow-tests: cannot kill `{}`: {e}", self.command);
        }
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("command", &self.command)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

fn spawn_line_reader(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Waits for `child` to exit for at most `timeout`, without reaping it early: the wait uses a
/// pidfd, so a child that outlives the deadline can still be killed safely by pid.
fn wait_exit(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    let pidfd = pidfd_open(child.id())?;
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Round up so that a sub-millisecond remainder does not become a busy loop of 0 ms polls.
        let ms = i32::try_from(remaining.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n > 0 {
            return child.wait().map(Some);
        }
        if remaining.is_zero() {
            return Ok(None);
        }
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `cmd` to completion within `timeout` and fails unless it exits with status 0.
pub fn run(cmd: Command, timeout: Duration) -> Result<Finished> {
    Proc::spawn(cmd, None)?.wait_ok(timeout)
}

/// Runs `cmd` with `input` on stdin, to completion within `timeout`; fails unless it exits 0.
pub fn run_with_stdin(cmd: Command, input: &str, timeout: Duration) -> Result<Finished> {
    Proc::spawn(cmd, Some(input.as_bytes().to_vec()))?.wait_ok(timeout)
}

/// Polls `condition` until it returns `Ok(true)`, with a short backoff, for at most `timeout`.
/// Fails with `what` if the deadline passes, or with the condition's own error.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_only_when_needed() {
        let mut cmd = Command::new("ip");
        cmd.args([
            "-n",
            "azft-1-a-0-r",
            "addr",
            "add",
            "fd00::1/64",
            "it's here",
        ]);
        assert_eq!(
            describe(&cmd),
            r"ip -n azft-1-a-0-r addr add fd00::1/64 'it'\''s here'"
        );
    }

    #[test]
    fn failing_command_names_itself_and_quotes_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo boom >&2; exit 3"]);
        let err = run(cmd, Duration::from_secs(10)).expect_err("exit 3 must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }

    #[test]
    fn timeout_kills_the_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let err = run(cmd, Duration::from_millis(200)).expect_err("sleep 30 must time out");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(format!("{err:#}").contains("did not finish"), "{err:#}");
    }

    #[test]
    fn lines_then_rest_of_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first; echo second; echo third"]);
        let mut proc = Proc::spawn(cmd, None).expect("spawn sh");
        assert_eq!(
            proc.next_line(Duration::from_secs(5)).expect("first line"),
            "first"
        );
        let done = proc.wait_ok(Duration::from_secs(5)).expect("sh exits 0");
        assert_eq!(done.stdout, "second\nthird\n");
        assert_eq!(done.last_line(), Some("third"));
    }

    #[test]
    fn stdin_is_delivered() {
        let done = run_with_stdin(Command::new("cat"), "hello\n", Duration::from_secs(5))
            .expect("cat echoes stdin");
        assert_eq!(done.stdout, "hello\n");
    }

    #[test]
    fn next_line_reports_early_exit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo nope >&2; exit 1"]);
        let mut proc = Proc::spawn(cmd, None).expect("spawn sh");
        let err = proc
            .next_line(Duration::from_secs(5))
            .expect_err("no stdout line");
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
    }
}
