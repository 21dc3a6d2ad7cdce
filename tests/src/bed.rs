//! The test bed: hosts in four subnets joined by a router namespace, torn down on drop.

use std::{
    collections::HashSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    addressing::{Family, Zone},
    cgroup,
    counters::IfCounters,
    host::{HOST_IFACE, Host},
    names::BedId,
    netns,
    process::{self, Proc, wait_until},
    traffic,
};

/// The hosts of a default bed: two in zone a (so same-subnet traffic can be tested), one in each
/// other zone, and `x1` in the unmapped subnet.
pub const DEFAULT_HOSTS: [(&str, Zone); 5] = [
    ("a1", Zone::A),
    ("a2", Zone::A),
    ("b1", Zone::B),
    ("c1", Zone::C),
    ("x1", Zone::X),
];

/// The host whose processes run in the bed's cgroup unless the builder says otherwise.
pub const DEFAULT_MONITORED: &str = "a1";

mod pod;

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// `ip netns add` sets up /run/netns on first use; creating namespaces one at a time per process
/// keeps concurrently built beds from racing on that.
static NETNS_CREATE: Mutex<()> = Mutex::new(());

/// Sysctls for every namespace, written before any interface exists so that `default` applies
/// to the interfaces created afterwards. They keep the links quiet: no DAD, no router
/// solicitations, no link-local addresses, MLD reports all sent within a millisecond of setup.
const QUIET_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv6/conf/default/addr_gen_mode", "1"),
    ("net/ipv6/conf/all/accept_ra", "0"),
    ("net/ipv6/conf/default/accept_ra", "0"),
    ("net/ipv6/conf/all/router_solicitations", "0"),
    ("net/ipv6/conf/default/router_solicitations", "0"),
    ("net/ipv6/conf/all/mldv1_unsolicited_report_interval", "1"),
    (
        "net/ipv6/conf/default/mldv1_unsolicited_report_interval",
        "1",
    ),
    ("net/ipv6/conf/all/mldv2_unsolicited_report_interval", "1"),
    (
        "net/ipv6/conf/default/mldv2_unsolicited_report_interval",
        "1",
    ),
];

/// Extra sysctls for hosts: TCP starts every connection afresh (no cached ssthresh/RTT from an
/// earlier connection of the same test), so runs are comparable.
const HOST_SYSCTLS: &[(&str, &str)] = &[("net/ipv4/tcp_no_metrics_save", "1")];

const ROUTER_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
    ("net/ipv6/conf/default/forwarding", "1"),
    ("net/ipv4/conf/all/send_redirects", "0"),
    ("net/ipv4/conf/default/send_redirects", "0"),
];

/// Configures and builds a [`TestBed`].
#[derive(Debug, Clone)]
pub struct TestBedBuilder {
    hosts: Vec<(String, Zone)>,
    monitored: String,
    traffic_bin: Option<PathBuf>,
    timeout: Duration,
    check_connectivity: bool,
}

impl Default for TestBedBuilder {
    fn default() -> Self {
        TestBedBuilder {
            hosts: DEFAULT_HOSTS
                .iter()
                .map(|(name, zone)| ((*name).to_owned(), *zone))
                .collect(),
            monitored: DEFAULT_MONITORED.to_owned(),
            traffic_bin: None,
            timeout: Duration::from_secs(60),
            check_connectivity: true,
        }
    }
}

impl TestBedBuilder {
    /// Adds a host to the default five (`a1`, `a2`, `b1`, `c1`, `x1`). Names: 1–12 lowercase
    /// letters or digits, unique. Hosts of a zone get .10, .11, … in the order added.
    pub fn host(mut self, name: &str, zone: Zone) -> Self {
        self.hosts.push((name.to_owned(), zone));
        self
    }

    /// Which host runs its commands in the bed's cgroup (default `a1`).
    pub fn monitored(mut self, name: &str) -> Self {
        name.clone_into(&mut self.monitored);
        self
    }

    /// The `azflow-traffic` binary to run in hosts (default: [`traffic::locate_binary`]).
    pub fn traffic_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.traffic_bin = Some(path.into());
        self
    }

    /// Bound on each traffic run and each [`Host::run`] (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether `build` pings every host from every host, both families (default true).
    pub fn check_connectivity(mut self, check: bool) -> Self {
        self.check_connectivity = check;
        self
    }

    /// Creates the namespaces, links, addresses, routes and the cgroup. On error everything
    /// created so far is removed again.
    pub fn build(self) -> Result<TestBed> {
        let started = Instant::now();
        self.validate()?;
        let traffic_bin = match self.traffic_bin {
            Some(path) => path,
            None => traffic::locate_binary()?,
        };
        let id = BedId::new()?;
        let name = id.to_string();
        let mut cleanup = Cleanup::default();

        let cgroup_root = cgroup::cgroup2_root()?;
        let cgroup_path = cgroup::create(&cgroup_root, &name)?;
        cleanup.cgroup = Some(cgroup_path.clone());

        let router = format!("{name}-r");
        let mut hosts = Vec::new();
        let mut per_zone = [0u8; Zone::ALL.len()];
        for (host_name, zone) in &self.hosts {
            let slot = &mut per_zone[Zone::ALL
                .iter()
                .position(|z| z == zone)
                .expect("every zone is in Zone::ALL")];
            hosts.push(Host {
                netns: format!("{name}-{host_name}"),
                name: host_name.clone(),
                zone: *zone,
                index: *slot,
                cgroup: (*host_name == self.monitored).then(|| cgroup_path.clone()),
                traffic_bin: traffic_bin.clone(),
                timeout: self.timeout,
            });
            *slot += 1;
        }

        {
            let _serial = NETNS_CREATE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for ns in std::iter::once(&router).chain(hosts.iter().map(|h| &h.netns)) {
                netns::add(ns)?;
                cleanup.netns.push(ns.clone());
            }
        }
        let mut router_sysctls = QUIET_SYSCTLS.to_vec();
        router_sysctls.extend_from_slice(ROUTER_SYSCTLS);
        netns::write_sysctls(&router, &router_sysctls)?;
        let mut host_sysctls = QUIET_SYSCTLS.to_vec();
        host_sysctls.extend_from_slice(HOST_SYSCTLS);
        for host in &hosts {
            netns::write_sysctls(&host.netns, &host_sysctls)?;
        }

        netns::ip_batch(&router, &router_batch(&hosts))?;
        bridge_fdb(&router, &hosts)?;
        for host in &hosts {
            netns::ip_batch(&host.netns, &host_batch(host, &hosts))?;
        }
        disable_offloads(&router, &hosts)?;

        let all_netns = cleanup.netns.clone();
        wait_until(
            "IPv6 addresses to leave the tentative state",
            SETUP_TIMEOUT,
            || {
                for ns in &all_netns {
                    if !netns::tentative_ipv6(ns)?.is_empty() {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;

        let monitored = hosts
            .iter()
            .position(|h| h.name == self.monitored)
            .expect("validate() checked that the monitored host exists");
        let mut bed = TestBed {
            id,
            name,
            router,
            hosts,
            monitored,
            cgroup: cgroup_path,
            cleanup,
            setup_time: Duration::ZERO,
        };
        if self.check_connectivity {
            bed.warm_up()?;
        }
        bed.setup_time = started.elapsed();
        Ok(bed)
    }

    fn validate(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for (name, _) in &self.hosts {
            let valid = (1..=12).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && name != "r";
            ensure!(
                valid,
                "host name {name:?} must be 1-12 lowercase letters or digits, and not \"r\""
            );
            ensure!(
                seen.insert(name.as_str()),
                "host name {name:?} is used twice"
            );
        }
        let per_zone_max = Zone::ALL
            .iter()
            .map(|z| self.hosts.iter().filter(|(_, hz)| hz == z).count())
            .max()
            .unwrap_or(0);
        ensure!(per_zone_max <= 200, "at most 200 hosts per zone");
        ensure!(
            seen.contains(self.monitored.as_str()),
            "the monitored host {:?} is not among the hosts {:?}",
            self.monitored,
            self.hosts.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        Ok(())
    }
}

/// Bridges, router addresses, veth pairs (created in the router namespace with the host end
/// placed straight into the host's namespace, so nothing ever appears in the caller's namespace)
/// and permanent neighbour entries, so no ARP or NDP traffic happens during tests.
fn router_batch(hosts: &[Host]) -> String {
    let mut b = String::new();
    let mut line = |s: String| {
        b.push_str(&s);
        b.push('\n');
    };
    line("link set lo up".into());
    for zone in Zone::ALL {
        let br = zone.bridge();
        line(format!(
            "link add {br} address {} type bridge mcast_snooping 0",
            zone.router_mac()
        ));
        line(format!("link set {br} up"));
        line(format!("addr add {}/24 dev {br}", zone.router_v4()));
        line(format!("addr add {}/64 dev {br}", zone.router_v6()));
    }
    for h in hosts {
        let port = h.router_port();
        line(format!(
            "link add {port} address {} type veth peer name {HOST_IFACE} address {} netns {}",
            h.router_port_mac(),
            h.mac(),
            h.netns
        ));
        line(format!("link set {port} master {}", h.zone.bridge()));
        line(format!("link set {port} up"));
        for ip in [h.ip(Family::V4), h.ip(Family::V6)] {
            line(format!(
                "neigh replace {ip} lladdr {} dev {} nud permanent",
                h.mac(),
                h.zone.bridge()
            ));
        }
    }
    b
}

/// Static forwarding entries, so a bridge never floods unicast frames to other ports (which
/// would show up in other hosts' counters) before it has learned, or after an entry aged out.
fn bridge_fdb(router: &str, hosts: &[Host]) -> Result<()> {
    let mut batch = String::new();
    for h in hosts {
        let _ = writeln!(
            batch,
            "fdb replace {} dev {} master static",
            h.mac(),
            h.router_port()
        );
    }
    let mut cmd = Command::new("bridge");
    cmd.args(["-n", router, "-batch", "-"]);
    process::run_with_stdin(cmd, &batch, SETUP_TIMEOUT)
        .with_context(|| format!("bridge batch in netns {router}:\n{batch}"))?;
    Ok(())
}

fn host_batch(host: &Host, all: &[Host]) -> String {
    let mut b = String::new();
    let mut line = |s: String| {
        b.push_str(&s);
        b.push('\n');
    };
    line("link set lo up".into());
    line(format!("link set {HOST_IFACE} up"));
    line(format!("addr add {}/24 dev {HOST_IFACE}", host.ipv4()));
    line(format!("addr add {}/64 dev {HOST_IFACE}", host.ipv6()));
    for family in Family::ALL {
        line(format!(
            "neigh replace {} lladdr {} dev {HOST_IFACE} nud permanent",
            host.gateway(family),
            host.zone.router_mac()
        ));
    }
    for peer in all
        .iter()
        .filter(|p| p.zone == host.zone && p.name != host.name)
    {
        for family in Family::ALL {
            line(format!(
                "neigh replace {} lladdr {} dev {HOST_IFACE} nud permanent",
                peer.ip(family),
                peer.mac()
            ));
        }
    }
    line(format!(
        "route add 0.0.0.0/0 via {} dev {HOST_IFACE}",
        host.gateway(Family::V4)
    ));
    line(format!(
        "route add ::/0 via {} dev {HOST_IFACE}",
        host.gateway(Family::V6)
    ));
    b
}

/// Wire truth (see TESTBED.md): veth never segments a GSO super-packet, so the router's ports
/// get TSO and GSO off (the kernel then segments in software on the way to a host) and the
/// hosts' interfaces get GRO and LRO off (so the receiver's counters see every segment).
fn disable_offloads(router: &str, hosts: &[Host]) -> Result<()> {
    let mut jobs = Vec::new();
    for h in hosts {
        let mut cmd = netns::exec_command(router, "ethtool");
        cmd.args(["-K", &h.router_port(), "tso", "off", "gso", "off"]);
        jobs.push(Proc::spawn(cmd, None)?);
        let mut cmd = netns::exec_command(&h.netns, "ethtool");
        cmd.args(["-K", HOST_IFACE, "gro", "off", "lro", "off"]);
        jobs.push(Proc::spawn(cmd, None)?);
    }
    for job in jobs {
        job.wait_ok(SETUP_TIMEOUT)?;
    }
    Ok(())
}

/// Network namespaces plus cgroup dir of one bed, hosts in four subnets and a router. Dropping
/// it kills every process in its namespaces and cgroup and removes them (also while unwinding
/// from a panic). Use [`TestBed::destroy`] to see teardown errors instead of a log line.
#[derive(Debug)]
pub struct TestBed {
    id: BedId,
    name: String,
    router: String,
    hosts: Vec<Host>,
    monitored: usize,
    cgroup: PathBuf,
    cleanup: Cleanup,
    setup_time: Duration,
}

impl TestBed {
    /// A default bed (see [`TestBedBuilder`]).
    pub fn new() -> Result<TestBed> {
        TestBed::builder().build()
    }

    pub fn builder() -> TestBedBuilder {
        TestBedBuilder::default()
    }

    /// If the machine can run beds, builds a default one; otherwise reports the test as skipped
    /// (or panics with `AZFLOW_REQUIRE_EBPF=1`) and returns None. Panics if building fails.
    pub fn new_or_skip() -> Option<TestBed> {
        crate::require_root_or_skip()?;
        Some(TestBed::new().unwrap_or_else(|e| panic!("building a test bed: {e:#}")))
    }

    /// The bed's id, the prefix of all its names (`azft-<pid>-<start>-<seq>`).
    pub fn id(&self) -> &str {
        &self.name
    }

    pub fn bed_id(&self) -> BedId {
        self.id
    }

    /// How long building took (including the connectivity check).
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// The host named `name`. Panics with the list of hosts if there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.try_host(name).unwrap_or_else(|| {
            panic!(
                "bed {} has no host {name:?}; its hosts are {:?}",
                self.name,
                self.hosts.iter().map(Host::name).collect::<Vec<_>>()
            )
        })
    }

    pub fn try_host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn hosts_in(&self, zone: Zone) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.zone == zone)
    }

    /// The host whose processes run in [`TestBed::cgroup_path`].
    pub fn monitored(&self) -> &Host {
        &self.hosts[self.monitored]
    }

    /// The bed's cgroup v2 directory, where an agent attaches its cgroup programs.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// The router's network namespace.
    pub fn router_netns(&self) -> &str {
        &self.router
    }

    /// Every network namespace of the bed (router first).
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.router.clone())
            .chain(self.hosts.iter().map(|h| h.netns.clone()))
            .collect()
    }

    /// A command that runs `program` in the router's namespace (to inspect bridges, ports, …).
    pub fn router_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns::exec_command(&self.router, program)
    }

    /// Counters of the router's port towards `host` (the router→host direction is its `tx`).
    pub fn router_port_counters(&self, host: &str) -> Result<IfCounters> {
        let port = self.host(host).router_port();
        netns::if_counters(&self.router, &port)
            .with_context(|| format!("reading counters of router port {port}"))
    }

    /// Pings, in both families, every other host and the own gateway from every host, and fails
    /// naming the pairs that did not answer. Neighbours are static, so this checks connectivity
    /// rather than warming caches; it sends a few ICMP packets, so take counter baselines after.
    pub fn warm_up(&self) -> Result<()> {
        let mut silent = Vec::new();
        let runs: Vec<_> = self
            .hosts
            .iter()
            .map(|from| {
                let mut targets = Vec::new();
                for family in Family::ALL {
                    targets.push(from.gateway(family));
                    for to in self.hosts.iter().filter(|to| to.name != from.name) {
                        targets.push(to.ip(family));
                    }
                }
                (from, targets)
            })
            .collect();
        for (from, targets) in runs {
            let report = from.ping(&targets)?;
            for ip in report.silent() {
                let name = self
                    .hosts
                    .iter()
                    .find(|h| h.ipv4() == ip || h.ipv6() == ip)
                    .map_or_else(|| format!("gateway {ip}"), |h| format!("{} ({ip})", h.name));
                silent.push(format!("{} -> {name}", from.name));
            }
        }
        if !silent.is_empty() {
            bail!(
                "bed {}: no ICMP echo reply for {}",
                self.name,
                silent.join(", ")
            );
        }
        Ok(())
    }

    /// Tears the bed down now, reporting errors (dropping does the same but can only log them).
    pub fn destroy(mut self) -> Result<()> {
        self.cleanup.run()
    }
}

/// What a bed created, removed in reverse on drop.
#[derive(Debug, Default)]
struct Cleanup {
    netns: Vec<String>,
    cgroup: Option<PathBuf>,
    done: bool,
}

impl Cleanup {
    fn run(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut errors = Vec::new();
        if let Some(cg) = &self.cgroup {
            // Kill the monitored host's processes first; removal below waits for them.
            let kill = cg.join("cgroup.kill");
            if kill.exists()
                && let Err(e) = std::fs::write(&kill, "1")
            {
                errors.push(format!("writing {}: {e}", kill.display()));
            }
        }
        for ns in self.netns.iter().rev() {
            if let Err(e) = netns::kill_all(ns) {
                errors.push(format!("killing processes in netns {ns}: {e:#}"));
            }
            if let Err(e) = netns::delete(ns) {
                errors.push(format!("deleting netns {ns}: {e:#}"));
            }
        }
        if let Some(cg) = &self.cgroup
            && let Err(e) = cgroup::remove(cg, TEARDOWN_TIMEOUT)
        {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("tearing down the test bed: {}", errors.join("; "))
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = self.run() {
            eprintln!("azflow-tests: {e:#}");
        }
    }
}
