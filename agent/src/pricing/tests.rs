use super::*;
use crate::topology::paths::Hop;

fn parse(text: &str) -> Result<PriceBook, PricesError> {
    parse_str(text, Path::new("prices.toml"))
}

fn lines(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected problems in {text:?}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

#[test]
fn built_in_prices_are_the_us_east_1_page_values() {
    let t = PriceTable::default();
    assert_eq!(t.bytes_per_gb(), 1_073_741_824);
    // $0.045 NAT processing + $0.09 internet out + $0.01 cross-AZ; in: $0.045 + $0.01.
    let nat = t.price(BillingPath::NatGateway(Hop::CrossAz));
    assert_eq!(nat.nano_usd_per_gb, [145_000_000, 55_000_000]);
    assert_eq!(
        t.price(BillingPath::CrossAz).nano_usd_per_gb,
        [10_000_000, 10_000_000]
    );
    assert_eq!(t.price(BillingPath::SameAz).nano_usd_per_gb, [0, 0]);
    assert_eq!(
        t.price(BillingPath::VpcEndpointGateway).nano_usd_per_gb,
        [0, 0]
    );
    assert_eq!(
        t.price(BillingPath::TransitGateway).nano_usd_per_gb,
        [20_000_000, 0]
    );
    assert_eq!(
        t.price(BillingPath::CrossRegion).nano_usd_per_gb,
        [20_000_000, 0]
    );
}

#[test]
fn costs_are_bytes_times_price() {
    let p = PriceTable::default().price(BillingPath::CrossAz);
    // One GB each way at $0.01.
    assert_eq!(p.cost_usd(0, 1 << 30), 0.01);
    assert_eq!(p.cost_usd(1, 3 << 30), 0.03);
    assert_eq!(p.cost_usd(0, 0), 0.0);
    assert_eq!(
        PathPrice::default().cost_usd(0, 1 << 40),
        0.0,
        "no bytes_per_gb: no cost"
    );
    assert_eq!(
        p.cost_usd(0, u64::MAX),
        u64::MAX as f64 * 0.01 / f64::from(1u32 << 30)
    );
}

#[test]
fn the_file_overrides_everywhere_then_per_region() {
    let book = parse(
        "bytes_per_gb = 1_000_000_000\n\
         [charges]\n\
         cross_az = { transmit = 0.02 }\n\
         [region.eu-central-1]\n\
         cross_az = { receive = 0.5 }\n\
         internet = { transmit = 1, receive = 0.000000001 }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let us = book.for_region(Some("us-east-1"));
    assert_eq!(us.bytes_per_gb(), 1_000_000_000);
    assert_eq!(us.charge(Charge::CrossAz), [20_000_000, 10_000_000]);
    let eu = book.for_region(Some("eu-central-1"));
    assert_eq!(eu.charge(Charge::CrossAz), [20_000_000, 500_000_000]);
    assert_eq!(eu.charge(Charge::Internet), [1_000_000_000, 1]);
    assert_eq!(eu.charge(Charge::NatGateway), [45_000_000, 45_000_000]);
    assert_eq!(book.for_region(None), us);
    assert_eq!(
        load(None).unwrap_or_else(|e| panic!("{e}")),
        PriceBook::default()
    );
}

#[test]
fn each_problem_is_one_line_naming_file_line_and_field() {
    let text = "[charges]\n\
                cross_az = { transmit = -0.01 }\n\
                nat_gatway = { transmit = 0.045 }\n\
                internet = { transmit = \"0.09\" }\n\
                public_ip = { sent = 0.01 }\n\
                [region.us-east-1a]\n\
                cross_az = { receive = 0.0000000001 }\n\
                [region.eu-west-1]\n\
                transit_gateway = 0.02\n";
    let l = lines(text);
    assert_eq!(l.len(), 7, "{l:#?}");
    assert!(
        l[0].starts_with("prices.toml:2:25: charges.cross_az.transmit: \"-0.01\" is negative"),
        "{}",
        l[0]
    );
    assert!(
        l[1].starts_with(
            "prices.toml:3:1: charges.nat_gatway: unknown charge; did you mean nat_gateway?"
        ),
        "{}",
        l[1]
    );
    assert!(
        l[2].starts_with(
            "prices.toml:4:25: charges.internet.transmit: expected a number, found a string"
        ),
        "{}",
        l[2]
    );
    assert!(
        l[3].starts_with("prices.toml:5:15: charges.public_ip.sent: unknown direction"),
        "{}",
        l[3]
    );
    assert!(
        l[4].starts_with(
            "prices.toml:6:9: region.us-east-1a: \"us-east-1a\" is an AZ name, not a region"
        ),
        "{}",
        l[4]
    );
    assert!(
        l[5].starts_with(
            "prices.toml:7:24: region.us-east-1a.cross_az.receive: \"0.0000000001\" is not a price"
        ),
        "{}",
        l[5]
    );
    assert!(
        l[6].starts_with(
            "prices.toml:9:19: region.eu-west-1.transit_gateway: expected a table, found"
        ),
        "{}",
        l[6]
    );
}

#[test]
fn syntax_errors_and_odd_values() {
    let l = lines("[charges]\ncross_az = { transmit = 0.01 \n");
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(l[0].starts_with("prices.toml:2:"), "{}", l[0]);
    assert!(l[0].contains("TOML syntax error"), "{}", l[0]);
    let l = lines(
        "bytes_per_gb = 0\nprice = 1\n[charges]\ncross_az = { transmit = 100.5 }\ninternet = { transmit = 1e-2 }\n",
    );
    assert_eq!(l.len(), 4, "{l:#?}");
    assert!(
        l[0].contains(":1:16: bytes_per_gb: expected a positive whole number"),
        "{}",
        l[0]
    );
    assert!(l[1].contains(":2:1: price: unknown field"), "{}", l[1]);
    assert!(
        l[2].contains("cross_az.transmit: 100.5 USD per GB is more than 100"),
        "{}",
        l[2]
    );
    assert!(
        l[3].contains("internet.transmit: \"1e-2\" is not a price"),
        "{}",
        l[3]
    );
    let ok = parse("[charges]\ncross_az = { transmit = 100, receive = 0 }\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ok.for_region(None).charge(Charge::CrossAz),
        [100_000_000_000, 0]
    );
}

#[test]
fn an_unreadable_file_names_itself() {
    let e = load(Some(Path::new("/nonexistent/prices.toml"))).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/prices.toml: cannot read the price table"),
        "{e}"
    );
}
