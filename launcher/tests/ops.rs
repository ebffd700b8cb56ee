//! The operator's commands as an operator runs them from a pod shell: `switchboard keys …`
//! against the database a running Switchboard uses, and `switchboard check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn free_port() -> u16 {
    switchboard_test_support::stack::free_port().unwrap()
}

/// `switchboard ARGS` in `dir` with only `vars` set.
fn switchboard(dir: &Path, vars: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

fn run(dir: &Path, vars: &[(&str, String)], args: &[&str]) -> Output {
    switchboard(dir, vars).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The id and secret printed by `keys create` or `keys rotate`.
fn issued(out: &str) -> (String, String) {
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    let secret = out.lines().find_map(|l| l.strip_prefix("secret (shown once): ")).unwrap().trim().to_owned();
    (id, secret)
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn status_with(client: &reqwest::Client, base: &str, key: &str) -> u16 {
    client
        .post(format!("{base}/v1/chat"))
        .header("X-API-Key", key)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn keys_issued_listed_rotated_and_revoked_from_the_shell_act_on_a_running_switchboard() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/sb.db", dir.path().display());
    let (http, auth, conversations, llm) = (free_port(), free_port(), free_port(), free_port());
    let vars = [
        ("DATABASE_URL", db),
        ("SWITCHBOARD_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("SWITCHBOARD_AUTH_ADDR", format!("127.0.0.1:{auth}")),
        ("SWITCHBOARD_CONVERSATIONS_ADDR", format!("127.0.0.1:{conversations}")),
        ("SWITCHBOARD_LLM_ADDR", format!("127.0.0.1:{llm}")),
    ];

    // Issued before anything runs: the command applies the migrations itself.
    let out =
        stdout(&run(dir.path(), &vars, &["keys", "create", "--system-id", "drillquiz", "--name", "quiz backend"]));
    let (id, secret) = issued(&out);
    assert!(id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()), "{out}");
    assert!(secret.starts_with(&format!("sb_{id}_")), "{out}");

    let listed = stdout(&run(dir.path(), &vars, &["keys", "list"]));
    assert!(listed.contains(&id) && listed.contains("quiz backend") && listed.contains("drillquiz"), "{listed}");
    assert!(!listed.contains(&secret), "a listing never shows a secret: {listed}");
    assert!(!stdout(&run(dir.path(), &vars, &["keys", "list", "--system-id", "cointutor"])).contains(&id));

    let child = switchboard(dir.path(), &vars).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let _running = Running(child);
    let base = format!("http://127.0.0.1:{http}");
    let client = switchboard_test_support::http().build().unwrap();
    switchboard_test_support::wait_ready(&client, &base).await;
    assert_eq!(status_with(&client, &base, &secret).await, 200, "the key issued from the shell works");

    // Rotation: the successor works at once; with no overlap, the old key stops.
    let out = stdout(&run(dir.path(), &vars, &["keys", "rotate", &id]));
    let (successor, successor_secret) = issued(&out);
    assert_ne!(successor, id);
    assert_eq!(status_with(&client, &base, &successor_secret).await, 200);
    let stopped = |key: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let status = status_with(&client, &base, &key).await;
                if status == 401 || Instant::now() > deadline {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(stopped(secret).await, 401, "the rotated-out key stops working");

    let out = stdout(&run(dir.path(), &vars, &["keys", "revoke", &successor]));
    assert!(out.contains(&successor), "{out}");
    assert_eq!(stopped(successor_secret).await, 401, "the revoked key stops working");
    let listed = stdout(&run(dir.path(), &vars, &["keys", "list", "--all"]));
    assert!(listed.lines().any(|l| l.starts_with(&successor) && l.ends_with("revoked")), "{listed}");

    // A wrong argument is named, and nothing is issued.
    let bad = run(dir.path(), &vars, &["keys", "create", "--name", "x", "--scope", "owner"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--scope"), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = run(dir.path(), &vars, &["keys", "revoke", "0123456789ab"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not found"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn check_config_passes_good_settings_and_names_the_bad_variable_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&run(
        dir.path(),
        &[("DATABASE_URL", "postgres://sb:hunter2-secret@db.invalid:5432/sb".into())],
        &["check-config"],
    ));
    assert!(out.contains("configuration OK"), "{out}");
    assert!(!out.contains("hunter2-secret"), "a password is never printed: {out}");
    assert!(!dir.path().join("data").exists(), "nothing was started or created");

    for (var, value) in [
        ("SWITCHBOARD_RATE_LIMIT_CHAT", "lots"),
        ("SWITCHBOARD_HISTORY_MESSAGES", "-3"),
        ("SWITCHBOARD_TURN_QUEUE_LIMIT", "0"),
        ("SWITCHBOARD_UPSTREAM_RETRIES", "many"),
        ("CHAT_GATEWAY_JWT_SECRET", "short"),
        ("SWITCHBOARD_GRPC_IN_PROCESS", "maybe"),
    ] {
        let output = run(dir.path(), &[(var, value.into())], &["check-config"]);
        assert!(!output.status.success(), "{var}={value} passed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}
