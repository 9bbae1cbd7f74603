//! Starts a real PostgreSQL server for tests: initdb + pg_ctl from Debian's `postgresql`
//! package, in a temp dir, on a free loopback port, stopped on drop. Missing binaries are a
//! test failure with instructions, never a skip.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn find_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CORDON_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    if let Some(dir) = candidates.into_iter().rev().find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists()) {
        return dir;
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin. \
         Install the Debian package `postgresql` (apt-get install -y postgresql) or set CORDON_PG_BIN \
         to the directory holding initdb and pg_ctl."
    );
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = find_bin_dir();
        let dir = tempfile::Builder::new().prefix("cordon-pg").tempdir().expect("temp dir");
        // initdb refuses to run as root; Debian's package creates the `postgres` user for this.
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(ok.success(), "chown of the PostgreSQL temp dir to `postgres` failed");
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut server = PgServer { dir, bin, port, as_postgres };
        let data = server.dir.path().join("data");
        server.run("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' -c fsync=off",
            server.dir.path().display()
        );
        let log = server.dir.path().join("pg.log");
        server.run("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "start"]);
        server
    }

    fn run(&mut self, tool: &str, args: &[&str]) {
        let path = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default();
            panic!(
                "{tool} failed: {}\n{}\n{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Creates a fresh database and returns its connection string.
    pub async fn fresh_db(&self, name: &str) -> String {
        let admin = self.url("postgres");
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("connect to test PostgreSQL");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={db}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let path = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = cmd.args(["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "-w", "stop"]).output();
    }
}
