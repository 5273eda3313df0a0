//! A real tansu broker on a free loopback port, in memory, for one test. Faults are real
//! too: `pause` stops the process (SIGSTOP) so requests hang and time out, `resume`
//! continues it with its data; `kill` ends it and `restart` starts a fresh one on the
//! same port (in-memory storage: a restarted broker starts empty). A broker that requires
//! SASL/SCRAM keeps its storage in a file instead ([`Broker::start_authenticated`]).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug)]
pub struct Broker {
    port: u16,
    /// Where the broker tells clients to connect: its own port, or a proxy's in front of it.
    advertised: u16,
    child: Option<Child>,
    /// tansu's storage URL, relative to `dir` when that is set.
    storage: String,
    dir: Option<PathBuf>,
    /// Whether clients must authenticate (SASL/SCRAM).
    authentication: bool,
}

/// A user of a broker that requires SASL: name, password and tansu's name for the SCRAM
/// mechanism its credential is stored for (`scram256` or `scram512`).
pub type ScramUser<'a> = (&'a str, &'a str, &'a str);

fn tansu_binary() -> String {
    std::env::var("TESTKIT_TANSU").unwrap_or_else(|_| "tansu".into())
}

impl Broker {
    pub fn start() -> anyhow::Result<Broker> {
        let port = crate::free_port();
        Self::start_advertising(port, port)
    }

    /// A broker on `port` that sends its clients to `advertised`, where a proxy (a TLS
    /// terminator, say) forwards to it. Clients reach it only through the proxy: the
    /// metadata of any first connection names `advertised`.
    pub fn start_advertising(port: u16, advertised: u16) -> anyhow::Result<Broker> {
        let mut b = Broker {
            port,
            advertised,
            child: None,
            storage: "memory://tansu/".into(),
            dir: None,
            authentication: false,
        };
        b.spawn()?;
        Ok(b)
    }

    /// A broker that requires SASL/SCRAM from every client, knowing `users`. tansu keeps
    /// users in its storage and lets only an authenticated client add one, so the users
    /// are added first, to a broker without authentication on file storage in `dir`, and
    /// the broker is then restarted on that storage with authentication required. Needs a
    /// tansu built with file storage (`--features dynostore,libsql`; `.ci/run` installs
    /// one).
    pub fn start_authenticated(dir: &Path, users: &[ScramUser<'_>]) -> anyhow::Result<Broker> {
        let port = crate::free_port();
        Self::start_authenticated_advertising(port, port, dir, users)
    }

    /// [`Broker::start_authenticated`] on `port`, sending its clients to `advertised` (see
    /// [`Broker::start_advertising`]) once authentication is on; the users are added on
    /// `port` itself, before anything listens on `advertised`.
    pub fn start_authenticated_advertising(
        port: u16,
        advertised: u16,
        dir: &Path,
        users: &[ScramUser<'_>],
    ) -> anyhow::Result<Broker> {
        let mut b = Broker {
            port,
            advertised: port,
            child: None,
            storage: "sqlite://tansu.db".into(),
            dir: Some(dir.to_path_buf()),
            authentication: false,
        };
        b.spawn()
            .map_err(|e| anyhow::anyhow!("{e}: file storage needs tansu built with `--features dynostore,libsql`"))?;
        for (name, password, mechanism) in users {
            let out = Command::new(tansu_binary())
                .args(["user", "create", "--broker", &format!("tcp://127.0.0.1:{port}"), name, password])
                .args(["--mechanism", mechanism])
                .env("RUST_LOG", "warn")
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "creating user {name} on tansu: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        b.kill();
        b.authentication = true;
        b.advertised = advertised;
        b.spawn()?;
        Ok(b)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let mut command = Command::new(tansu_binary());
        command
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", &self.storage]);
        if self.authentication {
            command.arg("--authentication");
        }
        if let Some(dir) = &self.dir {
            // tansu resolves a file storage URL against its working directory.
            command.current_dir(dir);
        }
        let child =
            command.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| {
                anyhow::anyhow!(
                    "starting tansu ({}): {e}; install it with `cargo install tansu --locked --features dynostore`",
                    tansu_binary()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            // A broker that cannot start (a storage its build lacks, say) exits at once.
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                anyhow::bail!("tansu exited before listening ({status}) with storage {}", self.storage);
            }
            if Instant::now() > deadline {
                anyhow::bail!("tansu did not listen on port {} within 30 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id while it runs (for signals, and for reading its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// Freezes the broker process: connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new broker on the same port: empty, unless its storage is a file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    fn admin(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        Ok(ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create()?)
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin = self.admin()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for r in admin.create_topics([&topic], &opts).await? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((n, code)) => anyhow::bail!("creating topic {n}: {code}"),
            }
        }
        Ok(())
    }

    /// Every record of `topic`, read from the beginning until nothing new arrives for a
    /// second. Watermarks are not used: tansu 0.6 reports wrong high watermarks (a
    /// partition holding 40 records answers `(0, 1)`), so reading until quiet is the
    /// reliable way to see everything that was acknowledged.
    pub fn fetch_all(&self, topic: &str) -> anyhow::Result<Vec<Fetched>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("testkit-{}", crate::random_suffix()))
            .set("enable.auto.commit", "false")
            .create()?;
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for t in meta.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_new = Instant::now();
        while last_new.elapsed() < Duration::from_secs(1) {
            if Instant::now() > deadline {
                anyhow::bail!("{topic} kept growing for a minute while being read");
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => anyhow::bail!("consuming {topic}: {e}"),
                Some(Ok(m)) => {
                    last_new = Instant::now();
                    out.push(Fetched {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().unwrap_or_default().to_vec(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter().map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec())).collect()
                            })
                            .unwrap_or_default(),
                    })
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
