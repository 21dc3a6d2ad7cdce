//! A tiny `--name value` argument parser for `azflow-traffic` (std only).

use std::{net::SocketAddr, str::FromStr, time::Duration};

/// The options after the subcommand, consumed one by one; leftovers are an error.
#[derive(Debug)]
pub struct Args {
    opts: Vec<(String, Option<String>)>,
}

/// Options that take no value.
const FLAGS: &[&str] = &["udp"];

impl Args {
    pub fn parse(raw: &[String]) -> Result<Args, String> {
        let mut opts = Vec::new();
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            if let Some((name, value)) = name.split_once('=') {
                opts.push((name.to_owned(), Some(value.to_owned())));
            } else if FLAGS.contains(&name) {
                opts.push((name.to_owned(), None));
            } else {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                opts.push((name.to_owned(), Some(value.clone())));
            }
        }
        Ok(Args { opts })
    }

    /// Takes every value of `--name` (for repeatable options).
    pub fn take_all(&mut self, name: &str) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        let mut rest = Vec::new();
        for (n, v) in self.opts.drain(..) {
            if n == name {
                values.push(v.ok_or_else(|| format!("--{name} needs a value"))?);
            } else {
                rest.push((n, v));
            }
        }
        self.opts = rest;
        Ok(values)
    }

    /// Takes the single value of `--name`, if given.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, String> {
        let mut values = self.take_all(name)?;
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err(format!("--{name} given more than once")),
        }
    }

    /// Takes and parses `--name`, if given.
    pub fn take_parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.take(name)?
            .map(|v| v.parse().map_err(|e| format!("--{name} {v:?}: {e}")))
            .transpose()
    }

    /// Takes and parses a mandatory `--name`.
    pub fn require<T: FromStr>(&mut self, name: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        self.take_parsed(name)?
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// Takes a byte count with an optional binary suffix (`64k`, `50M`, `1g`).
    pub fn take_bytes(&mut self, name: &str) -> Result<Option<u64>, String> {
        self.take(name)?
            .map(|v| parse_bytes(&v).map_err(|e| format!("--{name} {v:?}: {e}")))
            .transpose()
    }

    pub fn take_socket_addr(&mut self, name: &str) -> Result<SocketAddr, String> {
        self.require(name)
    }

    /// Takes `--name` as whole seconds, or `default`.
    pub fn take_secs(&mut self, name: &str, default: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(
            self.take_parsed(name)?.unwrap_or(default),
        ))
    }

    /// Takes `--name` as milliseconds, or `default`.
    pub fn take_millis(&mut self, name: &str, default: u64) -> Result<Duration, String> {
        Ok(Duration::from_millis(
            self.take_parsed(name)?.unwrap_or(default),
        ))
    }

    /// Whether the flag `--name` was given (and consumes it).
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.opts.len();
        self.opts.retain(|(n, _)| n != name);
        self.opts.len() != before
    }

    /// Fails if any option was not consumed.
    pub fn finish(self) -> Result<(), String> {
        match self.opts.first() {
            None => Ok(()),
            Some((name, _)) => Err(format!("unknown option --{name}")),
        }
    }
}

/// `1234`, `64k`, `50M`, `2G` (binary multiples).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, mult) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let n: u64 = digits.parse().map_err(|e| format!("{e}"))?;
    n.checked_mul(mult).ok_or_else(|| "too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("parses")
    }

    #[test]
    fn values_flags_and_leftovers() {
        let mut a = args(&[
            "--to",
            "[fd00::1]:80",
            "--count=3",
            "--udp",
            "--to",
            "10.0.0.1:1",
        ]);
        assert!(a.flag("udp"));
        assert_eq!(a.take_parsed::<u64>("count").expect("ok"), Some(3));
        assert_eq!(a.take_all("to").expect("ok").len(), 2);
        a.finish().expect("all consumed");
        let mut b = args(&["--size", "10", "--bogus", "1"]);
        assert_eq!(b.require::<u32>("size").expect("ok"), 10);
        assert!(b.finish().is_err());
        assert!(Args::parse(&["--to".to_owned()]).is_err());
    }

    #[test]
    fn byte_suffixes() {
        assert_eq!(parse_bytes("1234"), Ok(1234));
        assert_eq!(parse_bytes("64k"), Ok(65536));
        assert_eq!(parse_bytes("50M"), Ok(50 << 20));
        assert!(parse_bytes("x").is_err());
    }
}
