//! AWS peers for the tests, all on 127.0.0.1: `moto_server` (the EC2 API, instance credentials and
//! placement), a local IMDSv2 server that enforces the token protocol and serves what moto does
//! not (identity document, `network/interfaces/macs/…`), forwarding the rest to moto, and a
//! scriptable HTTP server to stand in for a misbehaving EC2.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct HttpReq {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl HttpReq {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// `value` of form field `name` in an `application/x-www-form-urlencoded` body.
    pub fn form(&self, name: &str) -> Option<String> {
        self.body.split('&').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }
}

/// What the server does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Full {
        status: u16,
        body: String,
    },
    /// Headers promise `declared` bytes, then the connection closes after `body`.
    Truncated {
        declared: usize,
        body: String,
    },
    /// Reads the request and never answers (until the server stops).
    Hang,
    /// A 200 with extra headers.
    WithHeaders {
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply::Full {
            status: 200,
            body: body.into(),
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply::Full {
            status,
            body: body.into(),
        }
    }
}

type Handler = dyn Fn(&HttpReq) -> Reply + Send + Sync;

/// A threaded HTTP/1.1 server, one request per connection.
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<HttpReq>>>,
}

impl HttpServer {
    pub fn start(handler: impl Fn(&HttpReq) -> Reply + Send + Sync + 'static) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, l) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (h, s2, l2) = (handler.clone(), s.clone(), l.clone());
                        std::thread::spawn(move || serve_one(stream, &*h, &s2, &l2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpServer { addr, stop, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<HttpReq> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_one(stream: TcpStream, handler: &Handler, stop: &AtomicBool, log: &Mutex<Vec<HttpReq>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let req = HttpReq {
        at: Instant::now(),
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    log.lock().expect("log").push(req.clone());
    let mut stream = stream;
    match handler(&req) {
        Reply::Full { status, body } => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Reply::Truncated { declared, body } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Reply::WithHeaders { headers, body } => {
            let mut head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Reply::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = stream.flush();
}

/// A plain GET to `addr` (moto), returning status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect upstream");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// The local IMDSv2 server's contents and counters.
#[derive(Debug, Default)]
pub struct ImdsState {
    /// Path (from `/latest/`) → body. Anything else goes to `upstream` (moto), else 404.
    pub values: BTreeMap<String, String>,
    pub upstream: Option<SocketAddr>,
    /// Live tokens and when they expire.
    pub tokens: HashMap<String, Instant>,
    pub token_puts: u32,
    pub unauthorized: u32,
    /// The next this many authorized GETs get a 500.
    pub fail_next: u32,
    issued: u32,
}

pub struct Imds {
    pub server: HttpServer,
    pub state: Arc<Mutex<ImdsState>>,
}

impl Imds {
    /// Enforces IMDSv2: PUT /latest/api/token with a TTL header, then every GET with a live token,
    /// else 401.
    pub fn start(values: BTreeMap<String, String>, upstream: Option<SocketAddr>) -> Imds {
        let state = Arc::new(Mutex::new(ImdsState {
            values,
            upstream,
            ..ImdsState::default()
        }));
        let st = state.clone();
        let server = HttpServer::start(move |req| {
            let mut s = st.lock().expect("imds state");
            if req.path == "/latest/api/token" {
                if req.method != "PUT" {
                    return Reply::status(405, "");
                }
                let Some(ttl) = req
                    .header("x-aws-ec2-metadata-token-ttl-seconds")
                    .and_then(|v| v.parse::<u64>().ok())
                else {
                    return Reply::status(400, "missing TTL");
                };
                if !(1..=21_600).contains(&ttl) {
                    return Reply::status(400, "bad TTL");
                }
                s.issued += 1;
                s.token_puts += 1;
                let token = format!("token-{}", s.issued);
                s.tokens
                    .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
                let headers = vec![(
                    "x-aws-ec2-metadata-token-ttl-seconds".to_string(),
                    ttl.to_string(),
                )];
                return Reply::WithHeaders {
                    headers,
                    body: token,
                };
            }
            let live = req
                .header("x-aws-ec2-metadata-token")
                .and_then(|t| s.tokens.get(t))
                .is_some_and(|exp| Instant::now() < *exp);
            if !live {
                s.unauthorized += 1;
                return Reply::status(401, "");
            }
            if s.fail_next > 0 {
                s.fail_next -= 1;
                return Reply::status(500, "internal error");
            }
            let key = req.path.trim_start_matches("/latest/").to_string();
            if let Some(v) = s.values.get(&key) {
                return Reply::ok(v.clone());
            }
            let upstream = s.upstream;
            drop(s);
            match upstream {
                Some(addr) if key.starts_with("meta-data/") => {
                    let (status, body) = http_get(addr, &req.path);
                    // moto raises (500) on paths it does not know: those are 404 on EC2.
                    if status == 200 {
                        Reply::ok(body)
                    } else {
                        Reply::status(404, "")
                    }
                }
                _ => Reply::status(404, ""),
            }
        });
        Imds { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn set(&self, path: &str, value: impl Into<String>) {
        self.state
            .lock()
            .expect("state")
            .values
            .insert(path.into(), value.into());
    }

    /// Forgets every token, as an IMDS restart does: the next GET gets 401.
    pub fn revoke_tokens(&self) {
        self.state.lock().expect("state").tokens.clear();
    }
}

/// What a test host looks like to IMDS.
#[derive(Debug, Clone)]
pub struct Instance {
    pub region: String,
    pub zone: String,
    pub zone_id: String,
    pub instance_id: String,
    pub account_id: String,
    pub mac: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub subnet_v4: String,
    pub subnet_v6: Option<String>,
    pub vpc_v4: Vec<String>,
    pub vpc_v6: Vec<String>,
}

impl Instance {
    /// IMDS paths (under `/latest/`) for this instance. Placement and credentials are left to
    /// the upstream when `with_placement` is false.
    pub fn values(&self, with_placement: bool) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert(
            "dynamic/instance-identity/document".into(),
            format!(
                r#"{{"accountId":"{}","architecture":"x86_64","availabilityZone":"{}","imageId":"ami-1","instanceId":"{}","instanceType":"m7i.large","privateIp":"10.0.1.10","region":"{}","version":"2017-09-30"}}"#,
                self.account_id, self.zone, self.instance_id, self.region
            ),
        );
        if with_placement {
            v.insert(
                "meta-data/placement/availability-zone".into(),
                self.zone.clone(),
            );
            v.insert(
                "meta-data/placement/availability-zone-id".into(),
                self.zone_id.clone(),
            );
            v.insert("meta-data/placement/region".into(), self.region.clone());
            v.insert("meta-data/instance-id".into(), self.instance_id.clone());
            v.insert("meta-data/mac".into(), self.mac.clone());
        }
        let p = format!("meta-data/network/interfaces/macs/{}", self.mac);
        v.insert(
            "meta-data/network/interfaces/macs/".into(),
            format!("{}/", self.mac),
        );
        v.insert(format!("{p}/vpc-id"), self.vpc_id.clone());
        v.insert(format!("{p}/subnet-id"), self.subnet_id.clone());
        v.insert(
            format!("{p}/subnet-ipv4-cidr-block"),
            self.subnet_v4.clone(),
        );
        if let Some(s) = &self.subnet_v6 {
            v.insert(format!("{p}/subnet-ipv6-cidr-blocks"), s.clone());
        }
        v.insert(format!("{p}/vpc-ipv4-cidr-blocks"), self.vpc_v4.join("\n"));
        if !self.vpc_v6.is_empty() {
            v.insert(format!("{p}/vpc-ipv6-cidr-blocks"), self.vpc_v6.join("\n"));
        }
        v
    }
}

/// Instance credentials as IMDS serves them, valid for a day.
pub fn credentials_json(key: &str) -> String {
    let exp = std::time::SystemTime::now() + Duration::from_secs(86_400);
    let secs = exp
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs();
    format!(
        r#"{{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"{key}","SecretAccessKey":"secret-{key}","Token":"session-{key}","Expiration":"{}"}}"#,
        rfc3339(secs)
    )
}

fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `moto_server` on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let moto_server = azflow_tests::find_tool("moto_server").unwrap_or_else(|| {
            panic!(
                "moto_server is not installed; `cargo xtask setup` puts it in {}",
                azflow_tests::pyenv_bin().display()
            )
        });
        let child = Command::new(moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting moto_server ({e}); `cargo xtask setup` installs it")
            });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut moto = Moto { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && http_get(addr, "/moto-api/").0 != 0
            {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs a boto3 script against this moto (`ec2` is the client) and returns its stdout.
    pub fn boto3(&self, script: &str) -> String {
        let program = format!(
            "import boto3, json\nec2 = boto3.client('ec2', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n{script}",
            self.url()
        );
        // The venv's python3 has boto3 (moto brings it); PATH's may not.
        let python = azflow_tests::find_tool("python3")
            .expect("python3 (cargo xtask setup makes a venv)");
        let out = Command::new(python)
            .args(["-c", &program])
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "boto3 script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a VPC (`vpc_v4`) and one subnet per `(zone, v4, v6)`; returns the VPC id and, per
    /// subnet, `(subnet_id, v4, v6, zone, zone_id)` as moto reports them.
    pub fn create_vpc(
        &self,
        vpc_v4: &str,
        subnets: &[(&str, &str, Option<&str>)],
    ) -> (String, Vec<[String; 5]>) {
        let mut script =
            format!("vpc = ec2.create_vpc(CidrBlock='{vpc_v4}')['Vpc']['VpcId']\nout = []\n");
        for (zone, v4, v6) in subnets {
            let v6_arg = v6
                .map(|c| format!(", Ipv6CidrBlock='{c}'"))
                .unwrap_or_default();
            script.push_str(&format!(
                "s = ec2.create_subnet(VpcId=vpc, CidrBlock='{v4}', AvailabilityZone='{zone}'{v6_arg})['Subnet']\n\
                 out.append([s['SubnetId'], s['CidrBlock'], '{}', s['AvailabilityZone'], s['AvailabilityZoneId']])\n",
                v6.unwrap_or("")
            ));
        }
        script.push_str("print(json.dumps({'vpc': vpc, 'subnets': out}))\n");
        let v: serde_json::Value =
            serde_json::from_str(self.boto3(&script).trim()).expect("JSON from the script");
        let vpc = v["vpc"].as_str().expect("vpc id").to_string();
        let rows = v["subnets"]
            .as_array()
            .expect("subnets")
            .iter()
            .map(|r| std::array::from_fn(|i| r[i].as_str().expect("string").to_string()))
            .collect();
        (vpc, rows)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment for an `azflow` child that must find AWS only where the test says: no ambient
/// credentials, profiles or endpoints.
pub fn aws_env(cmd: &mut Command, imds: &str, ec2: Option<&str>) {
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AZFLOW_TOPOLOGY",
        "AZFLOW_AWS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        .env("NO_PROXY", "127.0.0.1,localhost");
    if let Some(e) = ec2 {
        cmd.env("AWS_ENDPOINT_URL_EC2", e);
    }
}

/// A `DescribeSubnets` page in EC2's own format.
pub fn subnets_page(
    subnets: &[(&str, &str, Option<&str>, &str, &str)],
    next: Option<&str>,
) -> String {
    let mut items = String::new();
    for (id, v4, v6, zone, zone_id) in subnets {
        let v6 = v6
            .map(|c| {
                format!(
                    "<ipv6CidrBlockAssociationSet><item><ipv6CidrBlock>{c}</ipv6CidrBlock><ipv6CidrBlockState><state>associated</state></ipv6CidrBlockState></item></ipv6CidrBlockAssociationSet>"
                )
            })
            .unwrap_or_default();
        items.push_str(&format!(
            "<item><subnetId>{id}</subnetId><state>available</state><vpcId>vpc-test</vpcId><cidrBlock>{v4}</cidrBlock>{v6}\
             <availabilityZone>{zone}</availabilityZone><availabilityZoneId>{zone_id}</availabilityZoneId></item>"
        ));
    }
    let next = next
        .map(|t| format!("<nextToken>{t}</nextToken>"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeSubnetsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
         <requestId>r-1</requestId><subnetSet>{items}</subnetSet>{next}</DescribeSubnetsResponse>"
    )
}

/// A valid answer to any `Describe…` action with no items.
pub fn empty_reply(action: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r-1</requestId></{action}Response>"
    )
}

/// An EC2 error document.
pub fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
    )
}

/// The access key an EC2 request was signed with.
pub fn signing_key(req: &HttpReq) -> Option<String> {
    let auth = req.header("authorization")?;
    let cred = auth.split("Credential=").nth(1)?;
    Some(cred.split('/').next()?.to_string())
}
