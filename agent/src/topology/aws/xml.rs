//! The EC2 Query API's XML: a `DescribeSubnets` page and the error document. Pure functions over
//! text (fuzzed in `fuzz/`): any input gives a value or an error, never a panic.
//!
//! ```xml
//! <DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
//!   <subnetSet>
//!     <item>
//!       <subnetId>subnet-0a</subnetId> <vpcId>vpc-1</vpcId> <cidrBlock>10.0.1.0/24</cidrBlock>
//!       <availabilityZone>us-east-1a</availabilityZone> <availabilityZoneId>use1-az6</availabilityZoneId>
//!       <ipv6CidrBlockAssociationSet><item><ipv6CidrBlock>2600:1f18::/64</ipv6CidrBlock>
//!         <ipv6CidrBlockState><state>associated</state></ipv6CidrBlockState></item></ipv6CidrBlockAssociationSet>
//!       <tagSet><item><key>Name</key><value>private-a</value></item></tagSet>
//!     </item>
//!   </subnetSet>
//!   <nextToken>…</nextToken>
//! </DescribeSubnetsResponse>
//! ```

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use roxmltree::{Document, Node, ParsingOptions};

/// One subnet as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSubnet {
    pub subnet_id: String,
    pub vpc_id: String,
    /// `None` for IPv6-only subnets.
    pub cidr_v4: Option<Ipv4Net>,
    /// Associated IPv6 blocks (disassociated and failed ones left out).
    pub cidrs_v6: Vec<Ipv6Net>,
    pub zone: String,
    pub zone_id: String,
    /// The `Name` tag.
    pub name: Option<String>,
}

/// One page of `DescribeSubnets`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetsPage {
    pub subnets: Vec<AwsSubnet>,
    pub next_token: Option<String>,
}

/// An EC2 error document: `<Response><Errors><Error><Code>…</Code><Message>…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("not XML ({0})")]
    Syntax(String),
    #[error("expected <{expected}>, found <{found}>")]
    Root {
        expected: &'static str,
        found: String,
    },
    #[error("subnet {index} has no {field}")]
    Missing { index: usize, field: &'static str },
    #[error("subnet {index}: {field} {value:?} is not a valid CIDR")]
    BadCidr {
        index: usize,
        field: &'static str,
        value: String,
    },
    #[error("subnet {index} ({subnet_id}) has neither an IPv4 nor an IPv6 CIDR")]
    NoCidr { index: usize, subnet_id: String },
}

/// Bounds what one document may allocate: a page holds at most 1000 subnets of ~40 nodes.
const NODES_LIMIT: u32 = 1_000_000;

fn parse(text: &str) -> Result<Document<'_>, XmlError> {
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, opts).map_err(|e| XmlError::Syntax(e.to_string()))
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The trimmed text of child `name`, if present and not empty.
fn text_of(node: Node<'_, '_>, name: &str) -> Option<String> {
    let t = child(node, name)?.text()?.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Parses one `DescribeSubnets` page.
pub fn parse_describe_subnets(text: &str) -> Result<SubnetsPage, XmlError> {
    let doc = parse(text)?;
    let root = doc.root_element();
    if root.tag_name().name() != "DescribeSubnetsResponse" {
        return Err(XmlError::Root {
            expected: "DescribeSubnetsResponse",
            found: root.tag_name().name().to_owned(),
        });
    }
    let mut page = SubnetsPage {
        subnets: Vec::new(),
        next_token: text_of(root, "nextToken"),
    };
    let Some(set) = child(root, "subnetSet") else {
        return Ok(page);
    };
    for (index, item) in children(set, "item").enumerate() {
        page.subnets.push(subnet(index, item)?);
    }
    Ok(page)
}

fn subnet(index: usize, item: Node<'_, '_>) -> Result<AwsSubnet, XmlError> {
    let required =
        |field: &'static str| text_of(item, field).ok_or(XmlError::Missing { index, field });
    let subnet_id = required("subnetId")?;
    let cidr_v4 = match text_of(item, "cidrBlock") {
        None => None,
        Some(value) => Some(value.parse::<Ipv4Net>().map_err(|_| XmlError::BadCidr {
            index,
            field: "cidrBlock",
            value,
        })?),
    };
    let mut cidrs_v6 = Vec::new();
    if let Some(set) = child(item, "ipv6CidrBlockAssociationSet") {
        for assoc in children(set, "item") {
            let state = child(assoc, "ipv6CidrBlockState")
                .and_then(|s| text_of(s, "state"))
                .unwrap_or_default();
            // "associating" counts: addresses are handed out from it already.
            if state.contains("disassociat") || state.contains("fail") {
                continue;
            }
            let Some(value) = text_of(assoc, "ipv6CidrBlock") else {
                continue;
            };
            let net = value.parse::<Ipv6Net>().map_err(|_| XmlError::BadCidr {
                index,
                field: "ipv6CidrBlock",
                value,
            })?;
            cidrs_v6.push(net);
        }
    }
    if cidr_v4.is_none() && cidrs_v6.is_empty() {
        return Err(XmlError::NoCidr { index, subnet_id });
    }
    let name = child(item, "tagSet").and_then(|tags| {
        children(tags, "item")
            .find(|t| text_of(*t, "key").as_deref() == Some("Name"))
            .and_then(|t| text_of(t, "value"))
    });
    Ok(AwsSubnet {
        subnet_id,
        vpc_id: required("vpcId")?,
        cidr_v4,
        cidrs_v6,
        zone: required("availabilityZone")?,
        zone_id: required("availabilityZoneId")?,
        name,
    })
}

/// The first error of an EC2 (`<Response><Errors><Error>`) or STS-style (`<ErrorResponse><Error>`)
/// error document; `None` when `text` is not one.
pub fn parse_error(text: &str) -> Option<ApiError> {
    let doc = parse(text).ok()?;
    let error = doc.descendants().find(|n| {
        n.is_element() && n.tag_name().name() == "Error" && child(*n, "Code").is_some()
    })?;
    Some(ApiError {
        code: text_of(error, "Code")?,
        message: text_of(error, "Message").unwrap_or_default(),
    })
}

/// Every CIDR of `s`, IPv4 first.
pub fn cidrs(s: &AwsSubnet) -> impl Iterator<Item = IpNet> + '_ {
    s.cidr_v4
        .map(IpNet::V4)
        .into_iter()
        .chain(s.cidrs_v6.iter().copied().map(IpNet::V6))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>
  <subnetSet>
    <item>
      <subnetId>subnet-0a</subnetId>
      <state>available</state>
      <vpcId>vpc-1</vpcId>
      <cidrBlock>10.0.1.0/24</cidrBlock>
      <ipv6CidrBlockAssociationSet>
        <item>
          <ipv6CidrBlock>2600:1f18:1:1::/64</ipv6CidrBlock>
          <associationId>subnet-cidr-assoc-1</associationId>
          <ipv6CidrBlockState><state>associated</state></ipv6CidrBlockState>
        </item>
        <item>
          <ipv6CidrBlock>2600:1f18:1:9::/64</ipv6CidrBlock>
          <ipv6CidrBlockState><state>disassociated</state></ipv6CidrBlockState>
        </item>
      </ipv6CidrBlockAssociationSet>
      <availabilityZone>us-east-1a</availabilityZone>
      <availabilityZoneId>use1-az6</availabilityZoneId>
      <tagSet><item><key>env</key><value>prod</value></item><item><key>Name</key><value>private-a</value></item></tagSet>
    </item>
    <item>
      <subnetId>subnet-0b</subnetId>
      <vpcId>vpc-1</vpcId>
      <ipv6CidrBlockAssociationSet><item><ipv6CidrBlock>2600:1f18:1:2::/64</ipv6CidrBlock></item></ipv6CidrBlockAssociationSet>
      <ipv6Native>true</ipv6Native>
      <availabilityZone>us-east-1b</availabilityZone>
      <availabilityZoneId>use1-az1</availabilityZoneId>
    </item>
  </subnetSet>
  <nextToken>abc+/=</nextToken>
</DescribeSubnetsResponse>"#;

    fn net<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    #[test]
    fn a_page_with_v4_v6_tags_and_a_token() {
        let page = parse_describe_subnets(PAGE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.next_token.as_deref(), Some("abc+/="));
        assert_eq!(page.subnets.len(), 2);
        let a = &page.subnets[0];
        assert_eq!(
            a,
            &AwsSubnet {
                subnet_id: "subnet-0a".into(),
                vpc_id: "vpc-1".into(),
                cidr_v4: Some(net("10.0.1.0/24")),
                cidrs_v6: vec![net("2600:1f18:1:1::/64")],
                zone: "us-east-1a".into(),
                zone_id: "use1-az6".into(),
                name: Some("private-a".into()),
            }
        );
        let b = &page.subnets[1];
        assert_eq!(
            (b.cidr_v4, b.cidrs_v6.len(), b.name.as_deref()),
            (None, 1, None)
        );
        assert_eq!(
            cidrs(a).map(|c| c.to_string()).collect::<Vec<_>>(),
            ["10.0.1.0/24", "2600:1f18:1:1::/64"]
        );
    }

    #[test]
    fn an_empty_last_page() {
        let page = parse_describe_subnets(
            "<DescribeSubnetsResponse><subnetSet/></DescribeSubnetsResponse>",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page, SubnetsPage::default());
        let page = parse_describe_subnets(
            "<DescribeSubnetsResponse><nextToken> </nextToken></DescribeSubnetsResponse>",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.next_token, None, "a blank token ends the listing");
    }

    #[test]
    fn malformed_pages_say_what_is_wrong() {
        let truncated = &PAGE[..PAGE.len() / 2];
        assert!(matches!(
            parse_describe_subnets(truncated),
            Err(XmlError::Syntax(_))
        ));
        assert!(matches!(
            parse_describe_subnets(""),
            Err(XmlError::Syntax(_))
        ));
        let e = parse_describe_subnets("<Response><Errors/></Response>").expect_err("wrong root");
        assert_eq!(
            e.to_string(),
            "expected <DescribeSubnetsResponse>, found <Response>"
        );
        let no_zone = PAGE.replace("<availabilityZoneId>use1-az6</availabilityZoneId>", "");
        assert_eq!(
            parse_describe_subnets(&no_zone),
            Err(XmlError::Missing {
                index: 0,
                field: "availabilityZoneId"
            })
        );
        let bad = PAGE.replace("10.0.1.0/24", "10.0.1.0/33");
        assert!(matches!(
            parse_describe_subnets(&bad),
            Err(XmlError::BadCidr { index: 0, .. })
        ));
        let none = PAGE.replace("<ipv6CidrBlock>2600:1f18:1:2::/64</ipv6CidrBlock>", "");
        assert!(matches!(
            parse_describe_subnets(&none),
            Err(XmlError::NoCidr { index: 1, .. })
        ));
        let dtd = "<!DOCTYPE x [<!ENTITY a \"b\">]><DescribeSubnetsResponse/>";
        assert!(matches!(
            parse_describe_subnets(dtd),
            Err(XmlError::Syntax(_))
        ));
    }

    #[test]
    fn error_documents() {
        let ec2 = "<?xml version=\"1.0\"?><Response><Errors><Error><Code>UnauthorizedOperation</Code>\
                   <Message>You are not authorized to perform this operation.</Message></Error></Errors>\
                   <RequestID>r</RequestID></Response>";
        assert_eq!(
            parse_error(ec2),
            Some(ApiError {
                code: "UnauthorizedOperation".into(),
                message: "You are not authorized to perform this operation.".into()
            })
        );
        let sts = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert_eq!(parse_error(sts).map(|e| e.code), Some("Throttling".into()));
        assert_eq!(parse_error("<html>503</html>"), None);
        assert_eq!(parse_error("Service Unavailable"), None);
    }
}
