//! `islet dev` and `islet init`: a saved file is served as a new version through the registry swap
//! a deploy makes, with no request failing meanwhile; a syntax error answers 503 with its position
//! until the next save fixes it; every template serves the request its README shows; the dev
//! listener fires schedules, and `islet buckets` reads what a function stored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use crate::support::{get, http1, request, send, Node, Reply, TempDir};

/// `islet init NAME --template T` in `parent`: the project's folder.
fn init(parent: &TempDir, name: &str, template: &str) -> PathBuf {
  let out = Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(["init", name, "--template", template, "--dir", parent.path()])
    .output()
    .expect("run islet init");
  assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
  let root = Path::new(parent.path()).join(name);
  assert!(root.join("islet.toml").is_file() && root.join("src/index.js").is_file());
  root
}

/// Polls `check` until it returns a value, for at most `within`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
  within: Duration,
  mut check: impl FnMut() -> F,
) -> T {
  let deadline = Instant::now() + within;
  loop {
    if let Some(value) = check().await {
      return value;
    }
    assert!(Instant::now() < deadline, "not within {within:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
  }
}

/// Polls `url` until it answers `status`, for at most 20 s: that answer.
async fn until_status(url: &str, status: u16) -> Reply {
  eventually(Duration::from_secs(20), || {
    let url = url.to_string();
    async move {
      let reply = get(&http1(), &url).await;
      (reply.status == status).then_some(reply)
    }
  })
  .await
}

/// Runs `islet ARGS` against `node`'s admin API with the dev token.
fn islet_against(node: &Node, args: &[&str]) -> std::process::Output {
  let admin = node.admin_url();
  Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(args)
    .args(["--node", &admin, "--token", "dev"])
    .output()
    .expect("run islet")
}

fn edit(path: &Path, from: &str, to: &str) {
  let text = std::fs::read_to_string(path).unwrap();
  assert!(text.contains(from), "{from:?} not in {}", path.display());
  std::fs::write(path, text.replace(from, to)).unwrap();
}

async fn post(url: &str, body: &str) -> Reply {
  send(
    &http1(),
    request("POST", url)
      .body(Full::new(Bytes::from(body.to_string())))
      .unwrap(),
  )
  .await
}

#[tokio::test]
async fn a_saved_edit_is_served_next_with_no_failed_request_meanwhile() {
  let parent = TempDir::new("dev-edit");
  let root = init(&parent, "app", "fetch");
  let node = Node::dev(root.to_str().unwrap(), &[]);
  let url = node.url("/app/?name=loop");
  let first = get(&http1(), &url).await;
  assert_eq!(first.status, 200, "{}", first.text());
  assert_eq!(first.json()["message"], "hello, loop");

  // A steady loop on four connections while the file changes under it.
  let stop = Arc::new(AtomicBool::new(false));
  let loops: Vec<_> = (0..4)
    .map(|_| {
      let (stop, url) = (stop.clone(), url.clone());
      tokio::spawn(async move {
        let client = http1();
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
          let reply = get(&client, &url).await;
          assert_eq!(
            reply.status,
            200,
            "a request failed during the reload: {}",
            reply.text()
          );
          seen.push(reply.json()["message"].as_str().unwrap().to_string());
        }
        seen
      })
    })
    .collect();
  tokio::time::sleep(Duration::from_millis(200)).await;
  let saved = Instant::now();
  edit(
    &root.join("src/index.js"),
    "${env.GREETING}, ${name}",
    "${env.GREETING}, ${name}!",
  );
  let took = eventually(Duration::from_secs(10), || {
    let url = url.clone();
    async move {
      let reply = get(&http1(), &url).await;
      (reply.json()["message"] == "hello, loop!").then(|| saved.elapsed())
    }
  })
  .await;
  eprintln!("the edit was served {took:?} after the save");
  tokio::time::sleep(Duration::from_millis(200)).await;
  stop.store(true, Ordering::Relaxed);
  for seen in loops {
    let seen = seen.await.expect("a loop panicked");
    assert!(seen.len() > 5, "the loop barely ran: {seen:?}");
    // Each connection saw the old code, then only the new: no request went back.
    let switched = seen
      .iter()
      .position(|m| m == "hello, loop!")
      .expect("the new code reached every loop");
    assert!(seen[..switched].iter().all(|m| m == "hello, loop"), "{seen:?}");
    assert!(seen[switched..].iter().all(|m| m == "hello, loop!"), "{seen:?}");
  }
  let logs = node.logs();
  assert!(logs.contains("app info  reloaded version="), "{logs}");
  // Console lines read as: time, function, request id, level, message; plain text off a terminal.
  assert!(
    logs
      .lines()
      .any(|l| l.contains(" app ") && l.ends_with(" log   greeting loop") && !l.contains('\x1b')),
    "{logs}"
  );
}

#[tokio::test]
async fn a_syntax_error_answers_503_with_its_position_until_the_next_save_fixes_it() {
  let parent = TempDir::new("dev-syntax");
  let root = init(&parent, "app", "fetch");
  let node = Node::dev(root.to_str().unwrap(), &[]);
  let url = node.url("/app/");
  assert_eq!(get(&http1(), &url).await.status, 200);
  let entry = root.join("src/index.js");
  let good = std::fs::read_to_string(&entry).unwrap();
  std::fs::write(
    &entry,
    "export default {\n  fetch() { return new Response(\"x\") }}\n}\n",
  )
  .unwrap();
  let reply = until_status(&url, 503).await;
  let message = reply.error(503, "module_load_failed");
  assert!(message.starts_with("app/index.js:3:1: SyntaxError"), "{message}");
  // Printed once with the line it points at; a save elsewhere in the project does not repeat it.
  assert!(
    node.wait_for_log(" 3 | }", Duration::from_secs(5)),
    "{}",
    node.logs()
  );
  std::fs::write(root.join("README.md"), "# app, edited\n").unwrap();
  tokio::time::sleep(Duration::from_millis(300)).await;
  assert_eq!(get(&http1(), &url).await.status, 503);
  assert_eq!(node.logs().matches(" 3 | }").count(), 1, "{}", node.logs());
  // The next save fixes it.
  std::fs::write(&entry, good).unwrap();
  let fixed = until_status(&url, 200).await;
  assert_eq!(fixed.json()["message"], "hello, world");
}

#[tokio::test]
async fn every_template_serves_the_request_its_readme_shows() {
  let parent = TempDir::new("dev-templates");
  for template in ["fetch", "queue", "cron", "thumbnail"] {
    let name = format!("t-{template}");
    let root = init(&parent, &name, template);
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let node = Node::dev(root.to_str().unwrap(), &[]);
    let base = node.url(&format!("/{name}/"));
    match template {
      "fetch" => {
        assert!(
          readme.contains(&format!("curl 'http://127.0.0.1:8080/{name}/?name=islet'")),
          "{readme}"
        );
        let reply = get(&http1(), &node.url(&format!("/{name}/?name=islet"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["message"], "hello, islet");
      }
      "queue" => {
        assert!(
          readme.contains(&format!(
            "curl -X POST http://127.0.0.1:8080/{name}/ -d '{{\"id\":\"1\",\"task\":\"resize\"}}'"
          )),
          "{readme}"
        );
        let queued = post(&base, r#"{"id":"1","task":"resize"}"#).await;
        assert_eq!(queued.status, 202, "{}", queued.text());
        eventually(Duration::from_secs(10), || {
          let base = base.clone();
          async move { (get(&http1(), &base).await.json()["done"] == serde_json::json!(["1"])).then_some(()) }
        })
        .await;
      }
      "cron" => {
        assert!(
          readme.contains(&format!(
            "curl -X POST 'http://127.0.0.1:8080/__islet/scheduled?function={name}'"
          )),
          "{readme}"
        );
        let fired = post(&node.url(&format!("/__islet/scheduled?function={name}")), "").await;
        assert_eq!(fired.status, 200, "{}", fired.text());
        let state = get(&http1(), &base).await.json();
        assert_eq!(state["runs"], 1, "{state}");
        assert_eq!(state["last"]["cron"], "*/5 * * * *");
        // The dev listener's endpoint refuses what it cannot do, precisely.
        let unknown = post(&node.url("/__islet/scheduled?function=nobody"), "").await;
        unknown.error(404, "function_not_found");
        let unnamed = post(&node.url("/__islet/scheduled"), "").await;
        unnamed.error(400, "invalid_request");
        let bad_cron = post(
          &node.url(&format!("/__islet/scheduled?function={name}&cron=nope")),
          "",
        )
        .await;
        bad_cron.error(400, "invalid_request");
        // A page open in the developer's browser cannot fire it, and nothing ran.
        for (header, value) in [
          ("sec-fetch-site", "cross-site"),
          ("origin", "https://evil.example"),
        ] {
          let cross = send(
            &http1(),
            request("POST", &node.url(&format!("/__islet/scheduled?function={name}")))
              .header(header, value)
              .body(Full::default())
              .unwrap(),
          )
          .await;
          cross.error(400, "invalid_request");
        }
        assert_eq!(get(&http1(), &base).await.json()["runs"], 1);
      }
      "thumbnail" => {
        assert!(
          readme.contains(&format!("http://127.0.0.1:8080/{name}/photo.jpg")),
          "{readme}"
        );
        let photo = crate::dev_photo(640, 480);
        let put = send(
          &http1(),
          request("PUT", &node.url(&format!("/{name}/photo.jpg")))
            .header("content-type", "image/jpeg")
            .body(Full::new(Bytes::from(photo)))
            .unwrap(),
        )
        .await;
        assert_eq!(put.status, 201, "{}", put.text());
        let thumbnail = until_status(&node.url(&format!("/{name}/photo.jpg")), 200).await;
        assert_eq!(thumbnail.header("content-type"), Some("image/jpeg"));
        let image = image::load_from_memory(&thumbnail.body).expect("a JPEG");
        assert_eq!((image.width(), image.height()), (100, 75));
        // `islet buckets` reads what the function stored, through the dev node's admin API.
        let bucket = format!("{name}-photos");
        let listed = islet_against(&node, &["buckets", "list", &bucket]);
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
          listed.contains("uploads/photo.jpg") && listed.contains("thumbnails/photo.jpg"),
          "{listed}"
        );
        let binary = islet_against(&node, &["buckets", "get", &bucket, "thumbnails/photo.jpg"]);
        assert!(!binary.status.success());
        assert!(
          String::from_utf8_lossy(&binary.stderr).contains("is binary"),
          "{binary:?}"
        );
      }
      _ => unreachable!(),
    }
  }
}

/// A watcher that lives through a working session: 25 saves in a row, each one served, then the
/// process still up (an isolate made off the node's runtime once aborted it after a few reloads).
#[tokio::test]
async fn twenty_five_saves_in_a_row_are_each_served() {
  let parent = TempDir::new("dev-saves");
  let root = init(&parent, "app", "fetch");
  let node = Node::dev(root.to_str().unwrap(), &[]);
  let entry = root.join("src/index.js");
  let template = std::fs::read_to_string(&entry).unwrap();
  let url = node.url("/app/?name=x");
  for save in 0..25 {
    let greeting = format!("${{env.GREETING}} {save}, ${{name}}");
    std::fs::write(&entry, template.replace("${env.GREETING}, ${name}", &greeting)).unwrap();
    let expected = format!("hello {save}, x");
    eventually(Duration::from_secs(10), || {
      let (url, expected) = (url.clone(), expected.clone());
      async move { (get(&http1(), &url).await.json()["message"] == expected.as_str()).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
  }
  assert_eq!(get(&http1(), &url).await.json()["message"], "hello 24, x");
}

/// A function deployed to the dev node (the template's `islet deploy --manifest islet.toml`, run in
/// the project) serves instead of the files, and the next save says so.
#[tokio::test]
async fn a_deployed_version_shadows_the_files_and_a_save_says_so() {
  let parent = TempDir::new("dev-shadow");
  let root = init(&parent, "app", "fetch");
  let node = Node::dev(root.to_str().unwrap(), &[]);
  let deployed = Command::new(env!("CARGO_BIN_EXE_islet"))
    .current_dir(&root)
    .args([
      "deploy",
      "--manifest",
      "islet.toml",
      "--node",
      &node.admin_url(),
      "--token",
      "dev",
    ])
    .output()
    .unwrap();
  assert!(
    deployed.status.success(),
    "{}",
    String::from_utf8_lossy(&deployed.stderr)
  );
  edit(
    &root.join("src/index.js"),
    "${env.GREETING}, ${name}",
    "${env.GREETING}; ${name}",
  );
  assert!(
    node.wait_for_log(
      "serves instead of the files; `islet delete app` serves the files again",
      Duration::from_secs(10)
    ),
    "{}",
    node.logs()
  );
  assert_eq!(
    get(&http1(), &node.url("/app/")).await.json()["message"],
    "hello, world"
  );
}

/// `dev` is a token anyone knows: `islet dev` refuses an admin API other machines can reach
/// unless it is given a token of its own.
#[test]
fn dev_refuses_a_reachable_admin_api_with_its_well_known_token() {
  let parent = TempDir::new("dev-reachable");
  let root = init(&parent, "app", "fetch");
  let out = Command::new(env!("CARGO_BIN_EXE_islet"))
    .args([
      "dev",
      root.to_str().unwrap(),
      "--listen",
      "127.0.0.1:0",
      "--admin-listen",
      "0.0.0.0:0",
    ])
    .env_remove("ISLET_ADMIN_TOKEN")
    .output()
    .unwrap();
  assert!(!out.status.success());
  let stderr = String::from_utf8_lossy(&out.stderr);
  assert!(
    stderr.contains("which other machines can reach; give it a token of your own"),
    "{stderr}"
  );
}
