//! Checks of single values of the static file (CIDRs, AZ names and IDs, regions). Each returns
//! the problem and its fix as one sentence, for the caller to prefix with file, line and field.

use std::net::IpAddr;

use ipnet::IpNet;

/// Parses `ADDRESS/PREFIX` with the network address exactly (host bits clear).
pub fn cidr(s: &str) -> Result<IpNet, String> {
    let example = match s
        .split('/')
        .next()
        .and_then(|a| a.trim().parse::<IpAddr>().ok())
    {
        Some(IpAddr::V6(_)) => "fd00:0:1::/64",
        _ => "10.0.1.0/24",
    };
    let invalid = |why: String| {
        format!("{s:?} is not a valid CIDR ({why}); write it as ADDRESS/PREFIX, e.g. {example}")
    };
    if s.trim() != s {
        return Err(format!("{s:?} has spaces around it; write {:?}", s.trim()));
    }
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err(match s.parse::<IpAddr>() {
            Ok(a) => {
                let max = if a.is_ipv4() { 32 } else { 128 };
                format!(
                    "{s:?} has no prefix length; write ADDRESS/PREFIX, e.g. {a}/{max} for this one \
                     address or {example}"
                )
            }
            Err(_) => invalid("no /PREFIX".into()),
        });
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| invalid(format!("{addr:?} is not an IPv4 or IPv6 address")))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match prefix.parse::<u8>() {
        Ok(len) if len <= max => len,
        Ok(len) => return Err(invalid(format!("prefix length {len} > {max}"))),
        Err(_) if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(invalid(format!("prefix length {prefix} > {max}")));
        }
        Err(_) => return Err(invalid(format!("prefix length {prefix:?} is not a number"))),
    };
    let net = IpNet::new(addr, len).map_err(|e| invalid(e.to_string()))?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set; write the network address: {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// An AWS-style identifier: lowercase letters, digits and single `-`, e.g. `use1-az1`.
fn token(s: &str, what: &str, example: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{what} is empty; write one, e.g. {example}"));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!(
            "{s:?} contains whitespace; write the {what} alone, e.g. {example}"
        ));
    }
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        let lower = s.to_ascii_lowercase();
        if token(&lower, what, example).is_ok() {
            return Err(format!("{s:?} must be lowercase: write {lower}"));
        }
    }
    let charset_ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !charset_ok || s.starts_with('-') || s.ends_with('-') || s.contains("--") || s.len() > 64 {
        return Err(format!(
            "{s:?} is not a valid {what}; use lowercase letters, digits and single '-', e.g. {example}"
        ));
    }
    Ok(())
}

/// `us-east-1a`, `us-gov-west-1a`, `us-west-2-lax-1a`: region-style parts ending in digit+letter.
fn looks_like_zone_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    let last_ok = last.len() >= 2
        && last.chars().last().is_some_and(|c| c.is_ascii_lowercase())
        && last[..last.len() - 1].chars().all(|c| c.is_ascii_digit());
    parts.len() >= 3 && first.len() == 2 && first.chars().all(|c| c.is_ascii_lowercase()) && last_ok
}

/// `use1-az1`, `usw2-lax1-az1`: first part letters then digits, last part `az` + digits.
fn looks_like_zone_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    let first_ok = first.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && first.chars().last().is_some_and(|c| c.is_ascii_digit());
    let last_ok = last
        .strip_prefix("az")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    parts.len() >= 2 && first_ok && last_ok
}

const ID_VS_NAME: &str =
    "names map to different AZs in each account; `aws ec2 describe-availability-zones` lists both";

pub fn zone_id(s: &str) -> Result<(), String> {
    token(s, "AZ ID", "use1-az1")?;
    if looks_like_zone_name(s) {
        return Err(format!(
            "{s:?} is an AZ name, not an AZ ID; write the AZ ID, e.g. use1-az1 ({ID_VS_NAME})"
        ));
    }
    Ok(())
}

pub fn zone_name(s: &str) -> Result<(), String> {
    token(s, "AZ name", "us-east-1a")?;
    if looks_like_zone_id(s) {
        return Err(format!(
            "{s:?} is an AZ ID, not an AZ name; write the AZ name, e.g. us-east-1a, and put the \
             ID in zone_id ({ID_VS_NAME})"
        ));
    }
    Ok(())
}

pub fn region(s: &str) -> Result<(), String> {
    token(s, "region", "us-east-1")?;
    if looks_like_zone_name(s) {
        return Err(format!(
            "{s:?} is an AZ name, not a region; write the region: {}",
            &s[..s.len() - 1]
        ));
    }
    Ok(())
}

/// An AWS resource ID (`subnet-…`, `vpc-…`, `i-…`, an account number): non-empty, no spaces.
pub fn resource_id(s: &str, example: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!(
            "the ID is empty; remove the line or write one, e.g. {example}"
        ));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!(
            "{s:?} contains whitespace; write the ID alone, e.g. {example}"
        ));
    }
    Ok(())
}

/// A free-form label: anything but empty.
pub fn label(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("the name is empty; remove the line or write one, e.g. \"private-a\"".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_explain_what_is_wrong() {
        assert_eq!(
            cidr("10.0.1.0/24").map(|n| n.to_string()),
            Ok("10.0.1.0/24".into())
        );
        assert_eq!(
            cidr("fd00:0:1::/64").map(|n| n.to_string()),
            Ok("fd00:0:1::/64".into())
        );
        assert_eq!(
            cidr("10.0.1.0/33"),
            Err(
                "\"10.0.1.0/33\" is not a valid CIDR (prefix length 33 > 32); write it as \
                 ADDRESS/PREFIX, e.g. 10.0.1.0/24"
                    .into()
            )
        );
        assert_eq!(
            cidr("10.0.1.5/24"),
            Err("\"10.0.1.5/24\" has host bits set; write the network address: 10.0.1.0/24".into())
        );
        let e = cidr("fd00::1/300").expect_err("too long");
        assert!(
            e.contains("(prefix length 300 > 128)") && e.contains("e.g. fd00:0:1::/64"),
            "{e}"
        );
        let e = cidr("10.0.1.0").expect_err("no prefix");
        assert!(
            e.contains("no prefix length") && e.contains("10.0.1.0/32"),
            "{e}"
        );
        let e = cidr("10.0.1.x/24").expect_err("bad addr");
        assert!(
            e.contains("\"10.0.1.x\" is not an IPv4 or IPv6 address"),
            "{e}"
        );
        let e = cidr("10.0.1.0/abc").expect_err("bad prefix");
        assert!(e.contains("prefix length \"abc\" is not a number"), "{e}");
        assert!(cidr(" 10.0.1.0/24").expect_err("spaces").contains("spaces"));
        assert!(cidr("").is_err());
    }

    #[test]
    fn zone_ids_are_lenient_but_not_names_or_blank() {
        for ok in [
            "use1-az1",
            "usw2-lax1-az1",
            "test-az1",
            "local",
            "apse2-az3",
        ] {
            assert_eq!(zone_id(ok), Ok(()), "{ok}");
        }
        assert!(zone_id("").expect_err("empty").contains("empty"));
        assert!(zone_id("  ").expect_err("blank").contains("empty"));
        assert!(
            zone_id("use1 az1")
                .expect_err("space")
                .contains("whitespace")
        );
        assert!(
            zone_id("USE1-AZ1")
                .expect_err("upper")
                .contains("write use1-az1")
        );
        assert!(
            zone_id("use1_az1")
                .expect_err("underscore")
                .contains("not a valid AZ ID")
        );
        assert!(
            zone_id("us-east-1a")
                .expect_err("name")
                .contains("is an AZ name, not an AZ ID")
        );
        assert!(zone_id("-az1").is_err());
    }

    #[test]
    fn zone_names_and_regions() {
        for ok in [
            "us-east-1a",
            "us-gov-west-1b",
            "us-west-2-lax-1a",
            "test-a",
            "local",
        ] {
            assert_eq!(zone_name(ok), Ok(()), "{ok}");
        }
        assert!(
            zone_name("use1-az1")
                .expect_err("id")
                .contains("is an AZ ID, not an AZ name")
        );
        assert_eq!(region("us-east-1"), Ok(()));
        assert!(
            region("us-east-1a")
                .expect_err("zone")
                .contains("write the region: us-east-1")
        );
        assert!(resource_id("", "subnet-0123").is_err());
        assert!(label(" ").is_err());
        assert_eq!(label("private a"), Ok(()));
    }
}
