//! What AWS charges per GB on each billing path: built-in us-east-1 prices, overridden by a TOML
//! file (`--prices`) for every region or per region.
//!
//! ```toml
//! bytes_per_gb = 1073741824                          # optional: bytes in a billed GB
//!
//! [charges]                                          # every region
//! cross_az = { transmit = 0.01, receive = 0.01 }     # USD per GB, each direction optional
//!
//! [region.eu-central-1]                              # this region only (wins over [charges])
//! internet = { transmit = 0.09 }
//! ```
//!
//! Charge keys: `cross_az`, `internet`, `inter_region`, `public_ip`, `nat_gateway`,
//! `transit_gateway`, `interface_endpoint` (see [`crate::topology::paths::BillingPath::charges`]
//! for which paths pay which). Prices are kept as integer nano-USD, so a cost is exactly bytes ×
//! price. A bad file gives one line per problem, `FILE:LINE:COLUMN: FIELD: problem; fix`.

use std::{
    collections::BTreeMap,
    ops::Range,
    path::{Path, PathBuf},
};

use toml::de::{DeTable, DeValue};

use crate::topology::{
    paths::{BillingPath, Charge, PathPrice},
    static_file::{self, Problem},
};

/// Built-in prices, us-east-1, USD per GB as (transmit, receive), in nano-USD. From the AWS
/// pricing pages (checked 2026-12):
/// - <https://aws.amazon.com/ec2/pricing/on-demand/> "Data Transfer": across AZs $0.01/GB in
///   each direction; to the internet $0.09/GB (first 10 TB/month; in free); to another region
///   $0.02/GB (in free); to a public or Elastic IPv4 address in the same region $0.01/GB each
///   direction.
/// - <https://aws.amazon.com/vpc/pricing/> NAT gateway data processing $0.045/GB, both ways.
/// - <https://aws.amazon.com/transit-gateway/pricing/> $0.02/GB processed, billed to the
///   sender's attachment (so on transmit here).
/// - <https://aws.amazon.com/privatelink/pricing/> interface endpoint processing $0.01/GB (first
///   PB), both ways. Gateway endpoints (S3, DynamoDB) and same-AZ peering are free.
pub const US_EAST_1: [(Charge, [u64; 2]); 7] = [
    (Charge::CrossAz, [10_000_000, 10_000_000]),
    (Charge::Internet, [90_000_000, 0]),
    (Charge::InterRegion, [20_000_000, 0]),
    (Charge::PublicIp, [10_000_000, 10_000_000]),
    (Charge::NatGateway, [45_000_000, 45_000_000]),
    (Charge::TransitGateway, [20_000_000, 0]),
    (Charge::InterfaceEndpoint, [10_000_000, 10_000_000]),
];

/// AWS usage reports count data transfer in GB of 2^30 bytes; a file may say otherwise.
pub const DEFAULT_BYTES_PER_GB: u64 = 1 << 30;

/// Most a price may be (USD per GB): anything above is a typo for a smaller unit.
const MAX_USD_PER_GB: u64 = 100;

type Prices = BTreeMap<Charge, [u64; 2]>;
/// Per-direction overrides: `None` keeps the price below.
type Overrides = BTreeMap<Charge, [Option<u64>; 2]>;

/// The whole table: built-ins, the file's `[charges]`, and its `[region.X]` sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceBook {
    bytes_per_gb: u64,
    all: Prices,
    regions: BTreeMap<String, Overrides>,
}

impl Default for PriceBook {
    fn default() -> Self {
        Self {
            bytes_per_gb: DEFAULT_BYTES_PER_GB,
            all: US_EAST_1.into_iter().collect(),
            regions: BTreeMap::new(),
        }
    }
}

/// The prices of one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    bytes_per_gb: u64,
    charges: Prices,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceBook::default().for_region(None)
    }
}

impl PriceTable {
    /// The sum of the charges of `path`, per direction.
    pub fn price(&self, path: BillingPath) -> PathPrice {
        let mut nano = [0u64; 2];
        for c in path.charges() {
            let p = self.charges.get(c).copied().unwrap_or_default();
            for (n, add) in nano.iter_mut().zip(p) {
                *n = n.saturating_add(add);
            }
        }
        PathPrice {
            nano_usd_per_gb: nano,
            bytes_per_gb: self.bytes_per_gb,
        }
    }

    /// nano-USD per GB of one charge line.
    pub fn charge(&self, c: Charge) -> [u64; 2] {
        self.charges.get(&c).copied().unwrap_or_default()
    }

    pub fn bytes_per_gb(&self) -> u64 {
        self.bytes_per_gb
    }
}

impl PriceBook {
    /// The prices for `region` (the host's; `None`: unknown, the file's `[charges]` apply).
    pub fn for_region(&self, region: Option<&str>) -> PriceTable {
        let mut charges = self.all.clone();
        if let Some(over) = region.and_then(|r| self.regions.get(r)) {
            for (c, dirs) in over {
                let slot = charges.entry(*c).or_default();
                for (v, o) in slot.iter_mut().zip(dirs) {
                    if let Some(o) = o {
                        *v = *o;
                    }
                }
            }
        }
        PriceTable {
            bytes_per_gb: self.bytes_per_gb,
            charges,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PricesError {
    #[error(
        "{}: cannot read the price table ({source}); check the path and its permissions",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One line per problem, each prefixed by the file's path.
    #[error("{}", render(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect();
    lines.join("\n")
}

/// The built-ins, or the file at `path` over them.
pub fn load(path: Option<&Path>) -> Result<PriceBook, PricesError> {
    let Some(path) = path else {
        return Ok(PriceBook::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| PricesError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, path)
}

/// Validates `text`; `path` only names the file in messages.
pub fn parse_str(text: &str, path: &Path) -> Result<PriceBook, PricesError> {
    let mut c = Checker {
        text,
        starts: static_file::line_starts(text),
        problems: Vec::new(),
    };
    let book = c.document();
    c.problems.sort_by_key(|p| (p.line, p.column));
    if c.problems.is_empty() {
        Ok(book)
    } else {
        Err(PricesError::Invalid {
            path: path.to_owned(),
            problems: c.problems,
        })
    }
}

const TOP: &[&str] = &["bytes_per_gb", "charges", "region"];
const DIRECTIONS: [&str; 2] = ["transmit", "receive"];

struct Checker<'t> {
    text: &'t str,
    starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = static_file::position(self.text, &self.starts, span.start);
        self.problems.push(Problem {
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    fn document(&mut self) -> PriceBook {
        let mut book = PriceBook::default();
        let (root, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                let (line, column) = static_file::position(self.text, &self.starts, span.start);
                let (field, message) = static_file::syntax_problem(self.text, line, e.message());
                let message = message.replace("examples/topology.toml", "examples/prices.toml");
                self.problems.push(Problem {
                    line,
                    column,
                    field,
                    message,
                });
            }
            return book;
        }
        for (key, value) in root.get_ref().iter() {
            let name: &str = key.get_ref();
            match name {
                "bytes_per_gb" => match value
                    .get_ref()
                    .as_integer()
                    .map(|i| i.as_str().replace('_', ""))
                {
                    Some(s) if s.parse::<u64>().is_ok_and(|n| n > 0) => {
                        book.bytes_per_gb = s.parse().unwrap_or(DEFAULT_BYTES_PER_GB);
                    }
                    _ => self.report(
                        &value.span(),
                        "bytes_per_gb",
                        "expected a positive whole number of bytes; write 1073741824 (2^30, as AWS \
                         reports) or 1000000000",
                    ),
                },
                "charges" => {
                    let over = self.charges(value, "charges");
                    for (c, dirs) in over {
                        let slot = book.all.entry(c).or_default();
                        for (v, o) in slot.iter_mut().zip(dirs) {
                            if let Some(o) = o {
                                *v = o;
                            }
                        }
                    }
                }
                "region" => {
                    let Some(table) = self.table(value, "region", "[region.eu-west-1]") else {
                        continue;
                    };
                    for (rkey, rvalue) in table.iter() {
                        let region: &str = rkey.get_ref();
                        let field = format!("region.{region}");
                        if let Err(m) = static_file::check_region(region) {
                            self.report(&rkey.span(), field.clone(), m);
                        }
                        let over = self.charges(rvalue, &field);
                        book.regions.insert(region.to_owned(), over);
                    }
                }
                other => {
                    let hint = static_file::closest(other, TOP)
                        .map(|n| format!("did you mean {n}? "))
                        .unwrap_or_default();
                    self.report(
                        &key.span(),
                        other,
                        format!(
                            "unknown field; {hint}allowed at the top level are {}",
                            TOP.join(", ")
                        ),
                    );
                }
            }
        }
        book
    }

    fn table<'v, 'i>(
        &mut self,
        value: &'v toml::Spanned<DeValue<'i>>,
        field: &str,
        example: &str,
    ) -> Option<&'v DeTable<'i>> {
        if let DeValue::Table(t) = value.get_ref() {
            return Some(t);
        }
        let found = static_file::found(value.get_ref());
        self.report(
            &value.span(),
            field,
            format!("expected a table, found {found}; write it as a section, e.g. {example}"),
        );
        None
    }

    /// `{ charge = { transmit = X, receive = Y } }` under `field`.
    fn charges(&mut self, value: &toml::Spanned<DeValue<'_>>, field: &str) -> Overrides {
        let mut out = Overrides::new();
        let Some(table) = self.table(value, field, "[charges]") else {
            return out;
        };
        let names: Vec<&str> = Charge::ALL.iter().map(|c| c.as_str()).collect();
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            let at = format!("{field}.{name}");
            let Some(charge) = Charge::ALL.into_iter().find(|c| c.as_str() == name) else {
                let hint = static_file::closest(name, &names)
                    .map(|n| format!("did you mean {n}? "))
                    .unwrap_or_default();
                self.report(
                    &key.span(),
                    at,
                    format!(
                        "unknown charge; {hint}known charges are {}",
                        names.join(", ")
                    ),
                );
                continue;
            };
            let example = format!("{name} = {{ transmit = 0.01, receive = 0.01 }}");
            let Some(dirs) = self.table(v, &at, &example) else {
                continue;
            };
            let mut prices = [None; 2];
            for (dkey, dv) in dirs.iter() {
                let dname: &str = dkey.get_ref();
                let dat = format!("{at}.{dname}");
                let Some(i) = DIRECTIONS.iter().position(|d| *d == dname) else {
                    self.report(
                        &dkey.span(),
                        dat,
                        "unknown direction; write transmit and/or receive",
                    );
                    continue;
                };
                match usd_to_nano(dv.get_ref()) {
                    Ok(n) => prices[i] = Some(n),
                    Err(m) => self.report(&dv.span(), dat, m),
                }
            }
            out.insert(charge, prices);
        }
        out
    }
}

/// A price in USD per GB as integer nano-USD, read from the decimal text so 0.045 is exactly
/// 45_000_000.
fn usd_to_nano(v: &DeValue<'_>) -> Result<u64, String> {
    let fix = "write USD per GB as a number, e.g. 0.01 (at most 9 decimals, at most 100)";
    let raw = match v {
        DeValue::Integer(i) if i.radix() == 10 => i.as_str().replace('_', ""),
        DeValue::Float(f) => f.as_str().replace('_', ""),
        other => {
            let found = static_file::found(other);
            return Err(format!("expected a number, found {found}; {fix}"));
        }
    };
    let bad = || format!("{raw:?} is not a price; {fix}");
    if raw.starts_with('-') {
        return Err(format!("{raw:?} is negative; {fix}"));
    }
    let raw_num = raw.trim_start_matches('+');
    if raw_num.contains(['e', 'E']) || raw_num.contains("inf") || raw_num.contains("nan") {
        return Err(bad());
    }
    let (whole, frac) = raw_num.split_once('.').unwrap_or((raw_num, ""));
    if frac.len() > 9 {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    if whole >= MAX_USD_PER_GB && !(whole == MAX_USD_PER_GB && frac.bytes().all(|b| b == b'0')) {
        return Err(format!(
            "{raw} USD per GB is more than {MAX_USD_PER_GB}; {fix}"
        ));
    }
    let frac_nano: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    Ok(whole * 1_000_000_000 + frac_nano)
}

#[cfg(test)]
mod tests;
