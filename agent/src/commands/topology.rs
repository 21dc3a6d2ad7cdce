//! `azflow topology`: the resolved subnet → AZ table and this host's identity — from AWS when on
//! EC2 (IMDS + DescribeSubnets), with the static file on top — and where each part came from.

use serde_json::{Value, json};

use crate::{
    config::TopologyArgs,
    ebpf,
    self_metrics::SelfMetrics,
    topology::{self, SlotAllocator, Source, Topology, ZoneTable, aws},
};

#[derive(Debug, thiserror::Error)]
pub enum TopologyCmdError {
    /// Bad input: exit 78.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Runtime(String),
}

/// A static-file subnet that replaced what AWS said for the same CIDR.
struct Override<'a> {
    prefix: String,
    file_zone_id: &'a str,
    aws_zone_id: &'a str,
    aws_subnet_id: Option<&'a str>,
}

fn overrides<'a>(merged: &'a Topology, aws: Option<&'a Topology>) -> Vec<Override<'a>> {
    let Some(aws) = aws else { return Vec::new() };
    merged
        .subnets()
        .iter()
        .filter(|s| s.source == Source::StaticFile)
        .filter_map(|s| {
            aws.subnet(&s.cidr).map(|a| Override {
                prefix: s.cidr.to_string(),
                file_zone_id: &s.zone_id,
                aws_zone_id: &a.zone_id,
                aws_subnet_id: a.subnet_id.as_deref(),
            })
        })
        .collect()
}

pub fn run(args: &TopologyArgs) -> Result<String, TopologyCmdError> {
    let settings = args
        .aws
        .validate()
        .map_err(|e| TopologyCmdError::Config(e.to_string()))?;
    let book = crate::pricing::load(args.prices.as_deref())
        .map_err(|e| TopologyCmdError::Config(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TopologyCmdError::Runtime(format!("starting the runtime: {e}")))?;
    let metrics = SelfMetrics::new();
    let resolved = runtime
        .block_on(aws::resolve(&settings, args.topology.as_deref(), &metrics))
        .map_err(|e| {
            if e.is_config_error() {
                TopologyCmdError::Config(e.to_string())
            } else {
                TopologyCmdError::Runtime(e.to_string())
            }
        })?;
    let topo = &resolved.topology;
    let aws_part = resolved.refresher.as_ref().map(|r| r.aws_topology());
    let overridden = overrides(topo, aws_part);
    let sizes = ebpf::map_sizes(&crate::config::Limits {
        max_subnets: crate::config::MAX_SUBNETS_LIMIT,
        unmapped_entries: 1,
        nat_entries: 1,
        nat_pending: 1,
        workload_indices: 2,
        workload_cgroups: 1,
        workload_rtt: agent_common::workload_rtt::Mode::Off,
    });
    let mut table = topology::build_kernel_table(
        topo,
        &mut SlotAllocator::new(sizes.slots),
        &mut ZoneTable::new(),
    )
    .map_err(|e| TopologyCmdError::Runtime(e.to_string()))?;
    table.apply_prices(&book.for_region(topo.host().region.as_deref()));
    Ok(if args.json {
        let mut v = topology::to_json(topo, &table);
        if let Value::Object(map) = &mut v {
            map.insert("sources".into(), json!(resolved.sources));
            let list: Vec<Value> = overridden
                .iter()
                .map(|o| json!({"prefix": o.prefix, "file_zone_id": o.file_zone_id, "aws_zone_id": o.aws_zone_id, "aws_subnet_id": o.aws_subnet_id}))
                .collect();
            map.insert("overridden".into(), Value::Array(list));
        }
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    } else {
        let mut out = String::new();
        for line in &resolved.sources {
            out.push_str(line);
            out.push('\n');
        }
        for o in &overridden {
            out.push_str(&format!(
                "override  {}: file says {}, AWS said {}{}\n",
                o.prefix,
                o.file_zone_id,
                o.aws_zone_id,
                o.aws_subnet_id
                    .map(|id| format!(" ({id})"))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&topology::render_table(topo, &table));
        out
    })
}
