//! The static topology file (TOML): works anywhere, and overrides every other source.
//!
//! ```toml
//! [host]                                  # required
//! region = "us-east-1"                    # optional
//! zone = "us-east-1a"                     # required: the AZ name (differs per account)
//! zone_id = "use1-az1"                    # required: the AZ ID (the stable key)
//! vpc_cidrs = ["10.0.0.0/16"]             # optional; private ranges outside them are cross_vpc
//! instance_id = "i-0123456789abcdef0"     # optional
//! account_id = "123456789012"             # optional
//!
//! [[subnet]]                              # any number
//! cidr = "10.0.1.0/24"                    # required, network address (host bits clear)
//! zone = "us-east-1a"                     # required
//! zone_id = "use1-az1"                    # required
//! name = "private-a"                      # optional; also subnet_id, vpc_id, region
//! ```
//!
//! Routes, NAT gateways, peerings and endpoints (billing paths): see [`routing`].
//!
//! One validation pass reports every problem, each on one line as
//! `FILE:LINE:COLUMN: FIELD: problem; fix`, where FIELD is a path like `subnet[1].cidr`
//! (`subnet[N]` counts `[[subnet]]` sections from 0). Overlapping prefixes are legal: the most
//! specific wins. TOML syntax errors are reported alone (the rest of the file cannot be trusted).

use std::{
    collections::BTreeMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    model::{HostIdentity, Source, Subnet, Topology},
    values,
};

/// One thing wrong with the file, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// Path of the field, e.g. `subnet[1].cidr` or `host.zone_id`.
    pub field: String,
    /// The problem and its fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.field, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyFileError {
    #[error(
        "{}: cannot read the topology file ({source}); check the path and its permissions",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One line per problem, each prefixed by the file's path.
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl TopologyFileError {
    /// The problems found (none when the file could not be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect();
    lines.join("\n")
}

/// Reads and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Topology, TopologyFileError> {
    // Parsed on a scratch thread, and only a copy of the result kept: a file of 100k subnets
    // allocates about 290 MB of short-lived syntax tree around the few MB that survive, and in
    // the caller's heap those survivors would pin the freed pages for the agent's lifetime
    // (40 MiB RSS at 100k subnets). The scratch thread's arena empties whole and is trimmed.
    let parsed = std::thread::scope(|s| {
        s.spawn(|| {
            let text = std::fs::read_to_string(path).map_err(|source| TopologyFileError::Read {
                path: path.to_owned(),
                source,
            })?;
            parse_str(&text, path)
        })
        .join()
    });
    match parsed {
        Ok(Ok(t)) => Ok(t.clone()),
        Ok(Err(e)) => Err(e),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Validates `text`; `path` only names the file in messages.
pub fn parse_str(text: &str, path: &Path) -> Result<Topology, TopologyFileError> {
    let mut c = Checker {
        text,
        line_starts: line_starts(text),
        problems: Vec::new(),
    };
    let topology = c.document();
    c.problems.sort_by_key(|p| (p.line, p.column));
    match topology {
        Some(t) if c.problems.is_empty() => Ok(t),
        _ => Err(TopologyFileError::Invalid {
            path: path.to_owned(),
            problems: c.problems,
        }),
    }
}

const TOP_FIELDS: &[&str] = &[
    "host",
    "subnet",
    "route",
    "nat_gateway",
    "peering",
    "endpoint",
];
const HOST_FIELDS: &[&str] = &[
    "region",
    "zone",
    "zone_id",
    "vpc_cidrs",
    "instance_id",
    "account_id",
];
const SUBNET_FIELDS: &[&str] = &[
    "cidr",
    "zone",
    "zone_id",
    "name",
    "subnet_id",
    "vpc_id",
    "region",
];

type Value<'i> = Spanned<DeValue<'i>>;

/// The entries of one table, by key, with the table's own span and path.
struct Fields<'v, 'i> {
    path: String,
    span: Range<usize>,
    map: BTreeMap<&'v str, &'v Value<'i>>,
}

impl Fields<'_, '_> {
    fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }
}

struct Checker<'t> {
    text: &'t str,
    /// Byte offset where each line starts, so a position costs a binary search, not a scan
    /// (files with 100k subnets exist).
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = position(self.text, &self.line_starts, span.start);
        self.problems.push(Problem {
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    fn document(&mut self) -> Option<Topology> {
        let (root, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                let (line, column) = position(self.text, &self.line_starts, span.start);
                let (field, message) = syntax_problem(self.text, line, e.message());
                self.problems.push(Problem {
                    line,
                    column,
                    field,
                    message,
                });
            }
            return None;
        }
        let root = self.fields(root.get_ref(), 0..0, String::new(), TOP_FIELDS);
        let host = match root.map.get("host") {
            None => {
                self.report(
                    &(0..0),
                    "host",
                    "missing; add a [host] section with at least zone and zone_id, e.g. \
                     [host] zone = \"us-east-1a\" zone_id = \"use1-az1\"",
                );
                None
            }
            Some(v) => match v.get_ref() {
                DeValue::Table(t) => self.host(t, v.span()),
                other => {
                    let found = found(other);
                    self.report(
                        &v.span(),
                        "host",
                        format!("expected a table, found {found}; write it as one [host] section"),
                    );
                    None
                }
            },
        };
        let subnets = match root.map.get("subnet") {
            None => Some(Vec::new()),
            Some(v) => match v.get_ref() {
                DeValue::Array(items) => self.subnets(items),
                other => {
                    let found = found(other);
                    self.report(
                        &v.span(),
                        "subnet",
                        format!(
                            "expected an array of tables, found {found}; write each subnet as \
                             its own [[subnet]] section"
                        ),
                    );
                    None
                }
            },
        };
        let routing = self.routing(&root);
        Some(Topology::new(host?, subnets?).with_routing(routing?))
    }

    /// Collects the keys of `table`, reporting each one not in `allowed`.
    fn fields<'v, 'i>(
        &mut self,
        table: &'v DeTable<'i>,
        span: Range<usize>,
        path: String,
        allowed: &[&str],
    ) -> Fields<'v, 'i> {
        let mut fields = Fields {
            path,
            span,
            map: BTreeMap::new(),
        };
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                fields.map.insert(name, value);
                continue;
            }
            let hint = match closest(name, allowed) {
                Some(near) => format!("did you mean {near}? "),
                None => String::new(),
            };
            let section = if fields.path.is_empty() {
                "the top level"
            } else {
                fields.path.as_str()
            };
            let message = format!(
                "unknown field {name:?}; {hint}allowed fields in {section} are {}",
                allowed.join(", ")
            );
            self.report(&key.span(), fields.path_of(name), message);
        }
        fields
    }

    /// A string field, or `None` (reported) when it has another type. Missing is not reported.
    fn string<'v>(
        &mut self,
        f: &Fields<'v, '_>,
        name: &str,
        example: &str,
    ) -> Option<(&'v str, Range<usize>)> {
        let v = f.map.get(name)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), v.span())),
            other => {
                let found = found(other);
                let message = format!(
                    "expected a string, found {found}; write it in quotes, e.g. {name} = {example:?}"
                );
                self.report(&v.span(), f.path_of(name), message);
                None
            }
        }
    }

    /// A string field that must be present and pass `check`.
    fn required(
        &mut self,
        f: &Fields<'_, '_>,
        name: &str,
        example: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        if !f.map.contains_key(name) {
            let message = format!("missing; add {name} = {example:?}");
            self.report(&f.span, f.path_of(name), message);
            return None;
        }
        self.optional(f, name, example, check)?
    }

    /// A string field that may be absent (`Some(None)`); `None` when present but invalid.
    fn optional(
        &mut self,
        f: &Fields<'_, '_>,
        name: &str,
        example: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<Option<String>> {
        if !f.map.contains_key(name) {
            return Some(None);
        }
        let (s, span) = self.string(f, name, example)?;
        match check(s) {
            Ok(()) => Some(Some(s.to_owned())),
            Err(message) => {
                self.report(&span, f.path_of(name), message);
                None
            }
        }
    }

    fn host(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<HostIdentity> {
        let f = self.fields(table, span, "host".into(), HOST_FIELDS);
        let zone = self.required(&f, "zone", "us-east-1a", values::zone_name);
        let zone_id = self.required(&f, "zone_id", "use1-az1", values::zone_id);
        let region = self.optional(&f, "region", "us-east-1", values::region);
        let instance_id = self.optional(&f, "instance_id", "i-0123456789abcdef0", |s| {
            values::resource_id(s, "i-0123456789abcdef0")
        });
        let account_id = self.optional(&f, "account_id", "123456789012", |s| {
            values::resource_id(s, "123456789012")
        });
        let vpc_cidrs = self.vpc_cidrs(&f);
        Some(HostIdentity {
            region: region?,
            zone: zone?,
            zone_id: zone_id?,
            vpc_cidrs: vpc_cidrs?,
            instance_id: instance_id?,
            account_id: account_id?,
        })
    }

    fn vpc_cidrs(&mut self, f: &Fields<'_, '_>) -> Option<Vec<IpNet>> {
        self.cidr_array(f, "vpc_cidrs", "10.0.0.0/16")
    }

    fn subnets(&mut self, items: &[Value<'_>]) -> Option<Vec<Subnet>> {
        let mut out = Some(Vec::new());
        // CIDR → (index, line, zone_id) of its first appearance.
        let mut seen: BTreeMap<IpNet, (usize, usize, Option<String>)> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("subnet[{i}]");
            let DeValue::Table(table) = item.get_ref() else {
                let found = found(item.get_ref());
                self.report(
                    &item.span(),
                    path,
                    format!(
                        "expected a table, found {found}; write each subnet as a [[subnet]] section"
                    ),
                );
                out = None;
                continue;
            };
            let f = self.fields(table, item.span(), path, SUBNET_FIELDS);
            let cidr = self.cidr(&f);
            let zone = self.required(&f, "zone", "us-east-1a", values::zone_name);
            let zone_id = self.required(&f, "zone_id", "use1-az1", values::zone_id);
            let name = self.optional(&f, "name", "private-a", values::label);
            let subnet_id = self.optional(&f, "subnet_id", "subnet-0123456789abcdef0", |s| {
                values::resource_id(s, "subnet-0123456789abcdef0")
            });
            let vpc_id = self.optional(&f, "vpc_id", "vpc-0123456789abcdef0", |s| {
                values::resource_id(s, "vpc-0123456789abcdef0")
            });
            let region = self.optional(&f, "region", "us-east-1", values::region);

            if let Some((net, span)) = &cidr {
                let line = position(self.text, &self.line_starts, span.start).0;
                match seen.get(net) {
                    None => {
                        seen.insert(*net, (i, line, zone_id.clone()));
                    }
                    Some((first, first_line, first_zone)) => {
                        let message = match (first_zone, &zone_id) {
                            (Some(a), Some(b)) if a != b => format!(
                                "{net} is in {b} here (line {line}) but in {a} in subnet[{first}] \
                                 (line {first_line}); a subnet lives in exactly one AZ: fix the \
                                 zone_id of one of them"
                            ),
                            _ => format!(
                                "{net} is listed twice: here (line {line}) and in subnet[{first}] \
                                 (line {first_line}); remove one of them"
                            ),
                        };
                        self.report(span, f.path_of("cidr"), message);
                    }
                }
            }

            match (
                cidr,
                zone,
                zone_id,
                name,
                subnet_id,
                vpc_id,
                region,
                out.as_mut(),
            ) {
                (
                    Some((cidr, _)),
                    Some(zone),
                    Some(zone_id),
                    Some(name),
                    Some(subnet_id),
                    Some(vpc_id),
                    Some(region),
                    Some(list),
                ) => {
                    list.push(Subnet {
                        cidr,
                        zone,
                        zone_id,
                        name,
                        subnet_id,
                        vpc_id,
                        region,
                        source: Source::StaticFile,
                    });
                }
                _ => out = None,
            }
        }
        out
    }

    fn cidr(&mut self, f: &Fields<'_, '_>) -> Option<(IpNet, Range<usize>)> {
        if !f.map.contains_key("cidr") {
            self.report(
                &f.span,
                f.path_of("cidr"),
                "missing; add cidr = \"10.0.1.0/24\"",
            );
            return None;
        }
        let (s, span) = self.string(f, "cidr", "10.0.1.0/24")?;
        match values::cidr(s) {
            Ok(net) => Some((net, span)),
            Err(message) => {
                self.report(&span, f.path_of("cidr"), message);
                None
            }
        }
    }
}

/// A region name check, for other TOML files (the price table).
pub(crate) fn check_region(s: &str) -> Result<(), String> {
    values::region(s)
}

/// "a string", "an integer", … for messages.
pub(crate) fn found(v: &DeValue<'_>) -> String {
    let t = v.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

pub(crate) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn position(text: &str, line_starts: &[usize], offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line = line_starts.partition_point(|&s| s <= offset).max(1);
    let start = line_starts[line - 1];
    (line, text[start..offset].chars().count() + 1)
}

/// The allowed name nearest to a misspelt one (edit distance ≤ 2).
pub(crate) fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Field path and message of a TOML syntax error at `line`, guessed from the section headers
/// above it and the key on its line.
pub(crate) fn syntax_problem(text: &str, line: usize, message: &str) -> (String, String) {
    let mut section = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut error_line = "";
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(rest) = l.strip_prefix("[[") {
            let name = header_name(rest);
            let count = counts.entry(name.clone()).or_insert(0);
            section = format!("{name}[{count}]");
            *count += 1;
        } else if let Some(rest) = l.strip_prefix('[') {
            section = header_name(rest);
        }
        if n + 1 == line {
            error_line = l;
            break;
        }
    }
    let key = (!error_line.starts_with('['))
        .then(|| error_line.split_once('='))
        .flatten()
        .map(|(k, v)| (k.trim().trim_matches(['"', '\'']).to_owned(), v))
        .filter(|(k, _)| !k.is_empty());
    let field = match (&key, section.is_empty()) {
        (Some((k, _)), true) => k.clone(),
        (Some((k, _)), false) => format!("{section}.{k}"),
        (None, false) => section,
        (None, true) => "(top level)".to_owned(),
    };
    let message = message.replace('\n', "; ");
    let fix = match &key {
        Some((k, v)) if needs_quotes(v) => {
            let v = v.split('#').next().unwrap_or("").trim();
            format!("text values need quotes: write {k} = \"{v}\"")
        }
        Some(_) if message.starts_with("duplicate key") => {
            "this key is already set in the same section; keep one".to_owned()
        }
        None if message.starts_with("duplicate key") => {
            "this section appears twice; merge them into one (use [[subnet]] for each subnet)"
                .to_owned()
        }
        _ => "fix the TOML syntax (examples/topology.toml shows the format)".to_owned(),
    };
    (field, format!("TOML syntax error: {message}; {fix}"))
}

fn header_name(rest: &str) -> String {
    let name = rest.split(']').next().unwrap_or(rest);
    name.trim().trim_matches(['"', '\'']).to_owned()
}

/// An unquoted value that TOML cannot read as a number, boolean, array or table: most likely a
/// CIDR or name written without quotes.
fn needs_quotes(value: &str) -> bool {
    let v = value.split('#').next().unwrap_or("").trim();
    !v.is_empty()
        && !v.starts_with(['"', '\'', '[', '{'])
        && v != "true"
        && v != "false"
        && v.parse::<f64>().is_err()
}

mod routing;

#[cfg(test)]
mod tests;
