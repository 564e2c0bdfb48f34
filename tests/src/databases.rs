//! Real databases in a pod: PostgreSQL and Redis, Debian's packages, each
//! started in the pod's namespace on its addresses, with its data in a
//! directory of its own, shut down and removed on drop; and their clients,
//! run from a pod as a process of a cgroup (a fork pod's, or any other).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Cgroup, cmd::Proc, servers::TempDir, topology::Pod};

/// The unprivileged user Debian's package makes: PostgreSQL refuses root.
const POSTGRES_USER: &str = "postgres";

/// A PostgreSQL server; stopped (fast shutdown) and its data removed on drop.
#[derive(Debug)]
pub struct Postgres {
    proc: Proc,
    _data: TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown, the backends and shared memory go with it.
        self.proc.signal(libc::SIGINT);
        let _ = self.proc.wait_timeout(Duration::from_secs(10));
    }
}

/// `program` (a PostgreSQL server program) as the `postgres` user.
fn as_postgres(command: &mut Command, program: PathBuf) -> &mut Command {
    command
        .args([
            "--reuid",
            POSTGRES_USER,
            "--regid",
            POSTGRES_USER,
            "--init-groups",
        ])
        .arg(program)
}

/// The directory of PostgreSQL's server programs (`initdb`, `postgres`).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql): run `cargo xtask setup`")
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server under /usr/lib/postgresql: run `cargo xtask setup`")
}

impl Pod {
    /// Starts PostgreSQL on `port` of the pod's addresses, trusting every
    /// client (a test database), runs `setup` (SQL) in database `postgres`,
    /// and returns once it answers.
    pub fn postgres(&self, port: u16, setup: &str) -> Postgres {
        let bin = postgres_bin();
        let data = TempDir::new(&format!("detour-{}-pg-", self.name));
        crate::cmd::run("chown", &[POSTGRES_USER, &data.0.display().to_string()]);
        let pgdata = data.0.join("data");
        let initdb = as_postgres(&mut Command::new("setpriv"), bin.join("initdb"))
            .args(["--auth=trust", "--no-sync", "-U", "postgres", "-D"])
            .arg(&pgdata)
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let hba = pgdata.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        rules.push_str("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n");
        std::fs::write(&hba, rules).expect("write pg_hba.conf");

        let listen = format!("{},{}", self.ip4, self.ip6);
        let mut server = Command::new("nsenter");
        server
            .arg(format!("--net={}", self.netns.path()))
            .args(["--", "setpriv"]);
        let child = as_postgres(&mut server, bin.join("postgres"))
            .arg("-D")
            .arg(&pgdata)
            .args(["-h", &listen, "-p", &port.to_string(), "-k"])
            .arg(&data.0)
            .args(["-c", "fsync=off", "-c", "shared_buffers=16MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let server = Postgres {
            proc: Proc::new(child),
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.exec(
                "pg_isready",
                &["-q", "-h", &self.ip4.to_string(), "-p", &port.to_string()],
            );
            if ready.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL in {} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = psql_args(&self.ip4.to_string(), port, setup);
        let output = self.exec("psql", &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            output.status.success(),
            "setup SQL failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        server
    }

    /// Starts Redis on `port` of the pod's addresses (no persistence), runs
    /// `setup` (commands, one per line) and returns once it answers.
    pub fn redis(&self, port: u16, setup: &[&[&str]]) -> Proc {
        let bind = format!("{} {}", self.ip4, self.ip6);
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.path()))
            .args(["--", "redis-server", "--port", &port.to_string(), "--bind"])
            .args(bind.split(' '))
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = Proc::new(child);
        self.wait_listening(port);
        let host = self.ip4.to_string();
        let port = port.to_string();
        for command in setup {
            let mut args = vec!["-h", &host, "-p", &port];
            args.extend_from_slice(command);
            let output = self.exec("redis-cli", &args);
            assert!(output.status.success(), "redis setup {command:?} failed");
        }
        server
    }

    /// Runs `sql` with `psql` against `host:port`, as a process of
    /// `cgroup`; its output (unaligned, tuples only), or the error.
    pub fn psql_in(
        &self,
        cgroup: &Cgroup,
        host: &str,
        port: u16,
        sql: &str,
    ) -> Result<String, String> {
        let args = psql_args(host, port, sql);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.exec_in(cgroup, "psql", &args);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// Runs one `redis-cli` command against `host:port`, as a process of
    /// `cgroup`; its output.
    pub fn redis_in(&self, cgroup: &Cgroup, host: &str, port: u16, command: &[&str]) -> String {
        let port = port.to_string();
        let mut args = vec!["-h", host, "-p", &port];
        args.extend_from_slice(command);
        let output = self.exec_in(cgroup, "redis-cli", &args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    }
}

fn psql_args(host: &str, port: u16, sql: &str) -> Vec<String> {
    let port = port.to_string();
    [
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-h",
        host,
        "-p",
        &port,
        "-c",
        sql,
    ]
    .map(str::to_owned)
    .to_vec()
}
