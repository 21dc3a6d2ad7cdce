//! A pod behind a node, as the AWS VPC CNI wires it: its own network namespace and cgroup, an
//! address from the node's subnet, a veth to the node, host routes on the node, and the VPC
//! (here the router) sending the pod's address to the node. The node forwards, so NAT rules in the
//! node's namespace (kube-proxy's) apply to the pod's traffic after the pod's own hooks saw it.

use anyhow::{Context, Result, ensure};

use super::{HOST_SYSCTLS, QUIET_SYSCTLS, TestBed};
use crate::{addressing::Family, host::Host, netns, process::Proc};

/// Host index of the first pod in its zone: far above the bed's hosts (.10, .11, …).
const POD_INDEX: u8 = 40;

impl TestBed {
    /// Adds a pod `name` behind host `node` (which starts forwarding). The pod runs its commands
    /// in the bed's cgroup. Its interface has GRO off; the node's interface towards the router
    /// has TSO and GSO off, so the node's egress segments and backends' counters see the wire.
    pub fn add_pod(&mut self, node: &str, name: &str) -> Result<Host> {
        let node = self.host(node).clone();
        ensure!(self.try_host(name).is_none(), "a host named {name:?} exists");
        let pods_in_zone = self.hosts.iter().filter(|h| h.zone == node.zone && h.index >= POD_INDEX).count();
        let pod = Host {
            name: name.to_owned(),
            netns: format!("{}-{name}", self.name),
            zone: node.zone,
            index: POD_INDEX + u8::try_from(pods_in_zone).context("too many pods")?,
            cgroup: Some(self.cgroup.clone()),
            traffic_bin: node.traffic_bin.clone(),
            timeout: node.timeout,
        };
        {
            let _serial = super::NETNS_CREATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            netns::add(&pod.netns)?;
            self.cleanup.netns.push(pod.netns.clone());
        }
        let mut sysctls = QUIET_SYSCTLS.to_vec();
        sysctls.extend_from_slice(HOST_SYSCTLS);
        netns::write_sysctls(&pod.netns, &sysctls)?;
        netns::write_sysctls(
            &node.netns,
            &[("net/ipv4/ip_forward", "1"), ("net/ipv6/conf/all/forwarding", "1"), ("net/ipv4/conf/all/send_redirects", "0")],
        )?;
        let node_port = format!("p-{name}");
        let node_port_mac = format!("02:af:{:02x}:{:02x}:00:04", node.zone.number(), 0x10 + pod.index);
        // The node: a veth to the pod, host routes and static neighbours for both families.
        let mut b = String::new();
        b.push_str(&format!("link add {node_port} address {node_port_mac} type veth peer name eth0 address {} netns {}\n", pod.mac(), pod.netns));
        b.push_str(&format!("link set {node_port} up\n"));
        for family in Family::ALL {
            let (ip, len) = match family {
                Family::V4 => (pod.ip(family), 32),
                Family::V6 => (pod.ip(family), 128),
            };
            b.push_str(&format!("route add {ip}/{len} dev {node_port}\n"));
            b.push_str(&format!("neigh replace {ip} lladdr {} dev {node_port} nud permanent\n", pod.mac()));
        }
        netns::ip_batch(&node.netns, &b)?;
        // The pod: its address, and the node as an on-link gateway (no ARP, no NDP).
        let mut b = String::from("link set lo up\nlink set eth0 up\n");
        for family in Family::ALL {
            let len = if family == Family::V4 { 32 } else { 128 };
            b.push_str(&format!("addr add {}/{len} dev eth0\n", pod.ip(family)));
            b.push_str(&format!("neigh replace {} lladdr {node_port_mac} dev eth0 nud permanent\n", node.ip(family)));
            b.push_str(&format!("route add {}/{len} dev eth0\n", node.ip(family)));
            b.push_str(&format!("route add default via {} dev eth0\n", node.ip(family)));
        }
        netns::ip_batch(&pod.netns, &b)?;
        // The router sends the pod's addresses to the node's MAC (the VPC's secondary-IP routing).
        let mut b = String::new();
        for family in Family::ALL {
            b.push_str(&format!("neigh replace {} lladdr {} dev {} nud permanent\n", pod.ip(family), node.mac(), node.zone.bridge()));
        }
        netns::ip_batch(&self.router, &b)?;
        let mut jobs = Vec::new();
        for (ns, iface, what) in [(&pod.netns, "eth0", ["gro", "off"]), (&node.netns, "eth0", ["tso", "off"]), (&node.netns, "eth0", ["gso", "off"]), (&node.netns, node_port.as_str(), ["gro", "off"])] {
            let mut cmd = netns::exec_command(ns, "ethtool");
            cmd.args(["-K", iface]).args(what);
            jobs.push(Proc::spawn(cmd, None)?);
        }
        for job in jobs {
            job.wait_ok(std::time::Duration::from_secs(30))?;
        }
        self.hosts.push(pod.clone());
        Ok(pod)
    }

    /// Turns segmentation offload off on a host's interface, so its transmit counters count
    /// wire segments (a backend's replies are then wire truth at the source).
    pub fn segment_in_software(&self, host: &str) -> Result<()> {
        let h = self.host(host);
        for what in ["tso", "gso"] {
            let mut cmd = netns::exec_command(h.netns(), "ethtool");
            cmd.args(["-K", h.interface(), what, "off"]);
            Proc::spawn(cmd, None)?.wait_ok(std::time::Duration::from_secs(30))?;
        }
        Ok(())
    }
}
