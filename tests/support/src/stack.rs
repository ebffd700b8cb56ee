//! Switchboard as an operator runs it: the real `switchboard` binary, one process per component
//! (auth, llm-proxy, conversations, gateway) on loopback ports, started in order and each
//! waited for until it serves, or every component in one process ([`Layout::OneProcess`], as
//! `make run`). Used by `make chaos` (kills and restarts them) and `make bench` (measures them
//! from `/proc`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A component of Switchboard, run as `switchboard <command>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    /// The auth service.
    Auth,
    /// The LLM proxy.
    Llm,
    /// The conversation service.
    Conversations,
    /// The edge gateway.
    Gateway,
}

impl Part {
    /// Every component, in start order.
    pub const ALL: [Part; 4] = [Part::Auth, Part::Llm, Part::Conversations, Part::Gateway];

    /// The launcher's subcommand.
    pub fn command(self) -> &'static str {
        match self {
            Part::Auth => "auth",
            Part::Llm => "llm-proxy",
            Part::Conversations => "conversations",
            Part::Gateway => "gateway",
        }
    }

    /// Its slot in a [`Stack`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How the components are run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// One process per component, as on Kubernetes.
    Processes,
    /// Every component in one `switchboard` process, as `make run`: calls between them are
    /// made in-process.
    OneProcess,
}

/// Switchboard run as one process per component, each on its own loopback port (or as one
/// process serving all four ports).
pub struct Stack {
    /// Name, for logs.
    pub name: &'static str,
    /// The `switchboard` binary.
    pub bin: PathBuf,
    /// Every component's environment.
    pub env: Vec<(String, String)>,
    /// Where each component's output goes (`<name>-<command>.log`).
    pub logs: PathBuf,
    /// Listen ports, by [`Part::index`].
    pub ports: [u16; 4],
    /// The running processes, by [`Part::index`]; with [`Layout::OneProcess`], the one
    /// process is the gateway's slot.
    pub children: [Option<Child>; 4],
    /// How the components run.
    pub layout: Layout,
    /// The gateway's base URL.
    pub http: String,
    /// The database every component uses.
    pub db_url: String,
}

/// A port free on loopback right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Stack {
    /// Migrates the database, then starts every component and waits until each serves.
    /// `settings` come on top of the addresses and `DATABASE_URL`; one named `<part>:NAME` is
    /// given to that component only, as `NAME`.
    pub async fn start(
        name: &'static str,
        bin: &Path,
        logs: &Path,
        db_url: &str,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        Self::start_as(Layout::Processes, name, bin, logs, db_url, settings).await
    }

    /// As [`Stack::start`], in `layout`. With [`Layout::OneProcess`] a `<part>:NAME` setting
    /// reaches the one process only when `part` is the gateway.
    pub async fn start_as(
        layout: Layout,
        name: &'static str,
        bin: &Path,
        logs: &Path,
        db_url: &str,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
        let addr = |p: Part| format!("127.0.0.1:{}", ports[p.index()]);
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", db_url.to_owned()),
            ("SWITCHBOARD_AUTH_ADDR", addr(Part::Auth)),
            ("SWITCHBOARD_LLM_ADDR", addr(Part::Llm)),
            ("SWITCHBOARD_CONVERSATIONS_ADDR", addr(Part::Conversations)),
            ("SWITCHBOARD_HTTP_ADDR", addr(Part::Gateway)),
        ]
        .into_iter()
        .chain(settings.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut stack = Stack {
            name,
            bin: bin.to_owned(),
            env,
            logs: logs.to_owned(),
            ports,
            children: [None, None, None, None],
            layout,
            http: format!("http://{}", addr(Part::Gateway)),
            db_url: db_url.to_owned(),
        };
        // Migrations once, then each component alone and ready before the next.
        let status = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(&stack.bin)
                .arg("migrate")
                .envs(stack.env_of(None))
                .stdout(stack.log_file("migrate")?)
                .stderr(stack.log_file("migrate")?)
                .status(),
        )
        .await
        .context("migrate timed out")??;
        if !status.success() {
            bail!("{name}: `switchboard migrate` failed ({status}); see {}", stack.logs.display());
        }
        match layout {
            Layout::Processes => {
                for part in Part::ALL {
                    stack.spawn(part).await?;
                }
            }
            Layout::OneProcess => {
                // No subcommand: every component; `<gateway>:NAME` settings reach it.
                stack.children[Part::Gateway.index()] = Some(stack.launch(None, "switchboard", Part::Gateway)?);
                for part in Part::ALL {
                    stack.wait_ready(part).await?;
                }
            }
        }
        Ok(stack)
    }

    /// Every running process, named by its component (`switchboard` for the one process).
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        match self.layout {
            Layout::Processes => Part::ALL.iter().filter_map(|part| Some((part.command(), self.pid(*part)?))).collect(),
            Layout::OneProcess => self.pid(Part::Gateway).map(|pid| ("switchboard", pid)).into_iter().collect(),
        }
    }

    /// The settings of `part` (of the migration when `None`): every setting without a prefix,
    /// and those named `<part>:NAME` (e.g. `conversations:TOKIO_WORKER_THREADS`) as `NAME`.
    fn env_of(&self, part: Option<Part>) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().filter_map(move |(k, v)| match k.split_once(':') {
            None => Some((k.as_str(), v.as_str())),
            Some((only, name)) => (Some(only) == part.map(Part::command)).then_some((name, v.as_str())),
        })
    }

    /// An appending log file of this stack.
    pub fn log_file(&self, what: &str) -> anyhow::Result<Stdio> {
        let path = self.logs.join(format!("{}-{what}.log", self.name));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Stdio::from(file))
    }

    /// The port `part` listens on.
    pub fn port(&self, part: Part) -> u16 {
        self.ports[part.index()]
    }

    /// Starts `part` and waits until it serves.
    pub async fn spawn(&mut self, part: Part) -> anyhow::Result<()> {
        self.children[part.index()] = Some(self.launch(Some(part.command()), part.command(), part)?);
        self.wait_ready(part).await
    }

    /// Runs `switchboard [subcommand]` with the settings of `settings_of`, its output in the
    /// log named `log`.
    fn launch(&self, subcommand: Option<&str>, log: &str, settings_of: Part) -> anyhow::Result<Child> {
        Command::new(&self.bin)
            .args(subcommand)
            .envs(self.env_of(Some(settings_of)))
            .stdin(Stdio::null())
            .stdout(self.log_file(log)?)
            .stderr(self.log_file(log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))
    }

    pub async fn wait_ready(&mut self, part: Part) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = crate::http().timeout(Duration::from_secs(2)).build()?;
        let process = if self.layout == Layout::OneProcess { Part::Gateway } else { part };
        loop {
            if let Some(child) = self.children[process.index()].as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("{} {} exited at start ({status}); see {}", self.name, part.command(), self.logs.display());
            }
            let ready = match part {
                Part::Gateway => {
                    client.get(format!("{}/readyz", self.http)).send().await.is_ok_and(|r| r.status().is_success())
                }
                _ => health_check(self.port(part)).await == Some(ServingStatus::Serving),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} {} not ready after 30 s", self.name, part.command());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `kill -9`, then waits for the process to be gone.
    pub async fn kill9(&mut self, part: Part) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[part.index()].take() {
            child.start_kill()?;
            tokio::time::timeout(Duration::from_secs(10), child.wait()).await.context("killed process lingers")??;
        }
        Ok(())
    }

    /// Sends SIGTERM and hands back the process, to wait for it.
    pub fn sigterm(&mut self, part: Part) -> anyhow::Result<Child> {
        let child = self.children[part.index()].take().context("not running")?;
        let pid = child.id().context("no pid")?;
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(child)
    }

    /// The process id of `part`, while it runs.
    pub fn pid(&self, part: Part) -> Option<u32> {
        self.children[part.index()].as_ref().and_then(Child::id)
    }

    /// Stops `part` gracefully (SIGTERM, at most 15 s), then hard.
    pub async fn stop(&mut self, part: Part) -> anyhow::Result<()> {
        if self.children[part.index()].is_none() {
            return Ok(());
        }
        let mut child = self.sigterm(part)?;
        if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
            eprintln!("{} {} ignored SIGTERM for 15 s: killed", self.name, part.command());
            child.start_kill()?;
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Stops every component, the gateway first.
    pub async fn stop_all(&mut self) {
        for part in [Part::Gateway, Part::Conversations, Part::Llm, Part::Auth] {
            if let Err(e) = self.stop(part).await {
                eprintln!("stopping {}: {e:#}", part.command());
            }
        }
    }
}

/// A gRPC channel to a component's port, for health checks.
pub async fn health_channel(port: u16) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

/// The component's overall gRPC health, `None` when it does not answer.
pub async fn health_check(port: u16) -> Option<ServingStatus> {
    let mut client = HealthClient::new(health_channel(port).await?);
    let reply = client.check(HealthCheckRequest { service: String::new() }).await.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}
