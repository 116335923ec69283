//! compose.yaml, read (no Docker engine runs here) and held to what it promises: nothing
//! published beyond loopback by default, credentials required for NATS and ClickHouse, current
//! images, a healthcheck per service, the sandbox outside the pipeline's image. The NATS
//! configuration it mounts is run on a real nats-server, and the pipeline goes through it with
//! the per-service users compose gives each service.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{Deployment, NatsNode, Sandbox};
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("compose.yaml")).expect("compose.yaml parses").remove(0)
}

fn services(doc: &Yaml) -> BTreeMap<String, Yaml> {
    let map = doc["services"].as_hash().expect("services");
    map.iter().map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone())).collect()
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// `KEY: value` pairs of a service's environment.
fn env(service: &Yaml) -> BTreeMap<String, String> {
    let Some(map) = service["environment"].as_hash() else { return BTreeMap::new() };
    let text = |y: &Yaml| y.as_str().map(str::to_owned).or_else(|| y.as_i64().map(|i| i.to_string()));
    map.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), text(v)?))).collect()
}

/// `${NAME:?…}`: compose refuses to start while NAME is unset.
fn required(value: &str) -> Option<&str> {
    value.strip_prefix("${")?.split_once(":?").map(|(name, _)| name)
}

/// (major, minor) of an image's tag.
fn tag(image: &str) -> (u32, u32) {
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
    let mut parts = tag.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn every_published_port_is_on_loopback_unless_opted_in() {
    let all = services(&compose());
    let ports: Vec<(String, String)> =
        all.iter().flat_map(|(name, s)| strings(&s["ports"]).into_iter().map(move |p| (name.clone(), p))).collect();
    assert!(ports.len() >= 6, "{ports:?}");
    for (name, p) in &ports {
        assert!(p.starts_with("${BIND_ADDRESS:-127.0.0.1}:"), "{name} publishes {p} beyond loopback");
    }
    assert!(read(".env.example").contains("BIND_ADDRESS"), ".env.example names the opt-in");
}

#[test]
fn nats_and_clickhouse_require_credentials() {
    let all = services(&compose());
    let nats = &all["nats"];
    let conf = read("deploy/nats.conf");
    assert!(conf.contains("authorization") && conf.contains("sync_interval: always"), "{conf}");
    let oms = "NATS_OMS_PASSWORD".to_owned();
    assert!(conf.contains("{ user: oms, password: $NATS_OMS_PASSWORD, permissions:"), "oms in nats.conf");
    assert_eq!(required(&env(nats)[&oms]), Some(oms.as_str()), "nats needs {oms}");
    for user in ["fetcher", "normalizer", "sink"] {
        let var = format!("NATS_{}_PASSWORD", user.to_uppercase());
        assert!(conf.contains(&format!("{{ user: {user}, password: ${var}, permissions:")), "{user} in nats.conf");
        assert_eq!(required(&env(nats)[&var]), Some(var.as_str()), "nats needs {var}");
        let service = env(&all[user]);
        assert_eq!(service["NATS_USER"], user);
        assert_eq!(required(&service["NATS_PASSWORD"]), Some(var.as_str()), "{user}'s password");
    }
    let ch = env(&all["clickhouse"]);
    assert_ne!(ch.get("CLICKHOUSE_USER").map(String::as_str), Some("default"));
    for var in ["CLICKHOUSE_PASSWORD", "CLICKHOUSE_SINK_PASSWORD", "CLICKHOUSE_ANALYST_PASSWORD"] {
        assert!(ch.get(var).and_then(|v| required(v)).is_some(), "clickhouse needs {var}: {ch:?}");
    }
    let sink = env(&all["sink"]);
    assert_eq!(sink["CLICKHOUSE_USER"], "qoo10_sink");
    assert_eq!(required(&sink["CLICKHOUSE_PASSWORD"]), Some("CLICKHOUSE_SINK_PASSWORD"));
    assert_eq!(required(&sink["SINK_HTTP_TOKEN"]), Some("SINK_HTTP_TOKEN"), "the alert center needs its token");
    assert!(read("deploy/pipeline.compose.toml").contains("http_token_env = \"SINK_HTTP_TOKEN\""));
    // The shops' Qoo10 secrets reach the fetcher alone: the compose secret, and nothing of them
    // in the other services' environment.
    let secrets = |name: &str| strings(&all[name]["secrets"]);
    assert_eq!(secrets("fetcher"), ["qoo10"], "the fetcher mounts the shops' secrets");
    for name in ["normalizer", "sink", "nats", "clickhouse"] {
        assert!(secrets(name).is_empty(), "{name} mounts the shops' secrets");
        assert!(
            env(&all[name]).keys().all(|k| !k.contains("QOO10") && !k.contains("API_KEY")),
            "{name}: {:?}",
            env(&all[name])
        );
    }
    let shops = read("deploy/pipeline.compose.toml");
    assert!(shops.contains("api_key_file = \"/run/secrets/qoo10/") && !shops.contains("api_key ="), "{shops}");
    let ignored = read(".dockerignore");
    for never in [".env", "pipeline.toml", "secrets"] {
        assert!(ignored.lines().any(|l| l.trim() == never), ".dockerignore keeps {never} out of the build context");
    }
    let env_example = read(".env.example");
    for var in [
        "NATS_FETCHER_PASSWORD",
        "NATS_OMS_PASSWORD",
        "CLICKHOUSE_ADMIN_PASSWORD",
        "CLICKHOUSE_SINK_PASSWORD",
        "SINK_HTTP_TOKEN",
    ] {
        assert!(env_example.contains(&format!("{var}=")), ".env.example sets {var}");
    }
}

/// The users ClickHouse's first start creates are docs/security.md's, grant for grant.
#[test]
fn clickhouse_users_are_those_of_the_security_doc() {
    let grants = |text: &str| -> Vec<String> {
        text.lines().map(str::trim).filter(|l| l.starts_with("GRANT ")).map(str::to_owned).collect()
    };
    let init = grants(&read("deploy/clickhouse-init.sh"));
    assert!(!init.is_empty());
    assert_eq!(init, grants(&read("docs/security.md")));
    let ch = &services(&compose())["clickhouse"];
    assert!(
        strings(&ch["volumes"])
            .iter()
            .any(|v| v.starts_with("./deploy/clickhouse-init.sh:/docker-entrypoint-initdb.d/"))
    );
}

#[test]
fn images_are_current_and_every_service_is_health_checked() {
    let all = services(&compose());
    assert!(tag(all["nats"]["image"].as_str().unwrap()) >= (2, 12));
    let (major, minor) = tag(all["clickhouse"]["image"].as_str().unwrap());
    assert!(major >= 25 && (minor == 3 || minor == 8), "ClickHouse {major}.{minor} is not an LTS release");
    assert!(!all.is_empty());
    for (name, s) in &all {
        let test = strings(&s["healthcheck"]["test"]).join(" ");
        assert!(!test.is_empty(), "{name} has no healthcheck");
        if ["fetcher", "normalizer", "sink"].contains(&name.as_str()) {
            let listen = env(s)["HTTP_LISTEN"].clone();
            let port = listen.rsplit(':').next().unwrap();
            assert!(test.contains(&format!("127.0.0.1:{port}/readyz")), "{name}: {test}");
            assert_eq!(s["build"]["target"].as_str(), Some("pipeline"), "{name}");
        }
    }
    assert_eq!(all["sandbox"]["build"]["target"].as_str(), Some("sandbox"));
    let dockerfile = read("Dockerfile");
    let pipeline_stage = dockerfile.split("AS pipeline").nth(1).expect("a pipeline stage");
    assert!(!pipeline_stage.contains("sandbox"), "the pipeline image ships the sandbox");
    assert!(!dockerfile.contains("--workspace"), "the image builds the test crate (aws-lc)");
}

/// A line in 配送要請 the OMS sets a ship date for.
const NEW_LINE: u64 = 1_039_999_999;

async fn new_line(sandbox: &Sandbox) -> anyhow::Result<()> {
    let orders = sandbox.get_json("/_sandbox/orders?shop=sandbox-1").await?;
    let mut line = orders.as_array().and_then(|a| a.first().cloned()).ok_or_else(|| anyhow::anyhow!("no orders"))?;
    let paid = (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M:%S").to_string();
    for (k, v) in [
        ("order_no", serde_json::json!(NEW_LINE)),
        ("pack_no", serde_json::json!(839_999_999u64)),
        ("status", serde_json::json!(2)),
        ("claim_status", serde_json::json!(0)),
        ("order_date", serde_json::json!(paid)),
        ("payment_date", serde_json::json!(paid)),
        ("est_ship_date", serde_json::Value::Null),
        ("hold", serde_json::json!(true)),
    ] {
        line[k] = v;
    }
    sandbox.put_json("/_sandbox/orders", &serde_json::json!([line])).await
}

/// A client of `url` as `user`, with its own inbox prefix (as deploy/nats.conf wants it), that
/// keeps every "Permissions Violation" the server sends it.
async fn client_as(
    url: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<(async_nats::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
    let violations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = violations.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(runtime::nats::inbox_prefix(user))
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().expect("violations").push(e.to_string());
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, violations))
}

/// Waits (at most 5 s) until the server refused `what`, naming it.
async fn refused(violations: &std::sync::Arc<std::sync::Mutex<Vec<String>>>, what: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if violations
            .lock()
            .expect("violations")
            .iter()
            .any(|v| v.contains("Permissions Violation") && v.contains(what))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// deploy/nats.conf on nats-server: no anonymous client; each service's user carries the whole
/// pipeline from Qoo10 to ClickHouse (write-back and an OMS edit included) without one refused
/// call; and each user, `oms` too, is refused every publish and subscription outside its list.
#[tokio::test(flavor = "multi_thread")]
async fn the_compose_nats_configuration_admits_each_service_and_no_one_else() -> anyhow::Result<()> {
    let passwords =
        [("fetcher", "pw-f-1a2b"), ("normalizer", "pw-n-3c4d"), ("sink", "pw-s-5e6f"), ("oms", "pw-o-7g8h")];
    let vars: Vec<(String, &str)> =
        passwords.iter().map(|(u, p)| (format!("NATS_{}_PASSWORD", u.to_uppercase()), *p)).collect();
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    // As it is, but for the storage directory, which the test server's `-sd` gives (nats-server
    // refuses both); address and ports are overridden by its flags.
    let text = read("deploy/nats.conf");
    assert!(text.contains("  store_dir: /data/jetstream\n"));
    let dir = e2e::TempDir::new(&e2e::unique("natsconf"))?;
    let conf = dir.0.join("nats.conf");
    std::fs::write(&conf, text.replace("  store_dir: /data/jetstream\n", ""))?;
    let monitor = e2e::free_port().to_string();
    let node = NatsNode::single_env(&["-c", &conf.display().to_string(), "-m", &monitor], &env).await?;
    assert!(async_nats::connect(node.url()).await.is_err(), "an anonymous client is refused");

    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "15"]).await?;
    new_line(&sandbox).await?;
    let dep = Deployment::on_nats_unprefixed(
        &node.url(),
        &format!(
            "[qoo10]\nbase_url = \"{}\"\n\n[[shops]]\nid = \"c1\"\nuser_id = \"sandbox-seller-1\"\n\
             api_key = \"sandbox-api-key-1\"\npassword = \"sandbox-password-1\"\nwriteback = true\n",
            sandbox.base_url()
        ),
    )
    .await?;
    let run_as = |name: &str, args: &[&str], user: &str, password: &str| {
        let out =
            dep.run_env(name, args, &[("NATS_USER", user), ("NATS_PASSWORD", password)], Duration::from_secs(120))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        anyhow::ensure!(out.status.code() == Some(0), "{name} {args:?} as {user}: {stderr}");
        anyhow::ensure!(!stderr.contains("Permissions Violation"), "{name} was refused a call: {stderr}");
        anyhow::ensure!(!stderr.contains(password), "{name} printed its password");
        Ok(stderr)
    };
    let (fetcher, normalizer, sink) = (passwords[0].1, passwords[1].1, passwords[2].1);
    run_as("fetcher", &["--once"], "fetcher", fetcher)?;
    run_as("normalizer", &["--until-idle"], "normalizer", normalizer)?;
    run_as("sink", &["--until-idle"], "sink", sink)?;
    assert!(dep.count("SELECT count() FROM orders FINAL").await > 0);

    // The OMS user sends an edit (a ship date, which the sink turns into a command for this
    // write-back shop) and reads orders and results; the pipeline carries both through.
    let (oms, oms_refused) = client_as(&node.url(), "oms", passwords[3].1).await?;
    let mut orders = oms.subscribe("orders.>").await?;
    let mut results = oms.subscribe("qoo10.command_results.>").await?;
    oms.flush().await?;
    let no = NEW_LINE;
    let date = (chrono::Utc::now() + chrono::Duration::hours(9) + chrono::Duration::days(3)).date_naive();
    let edit = serde_json::json!({"schema_version": 1, "edit_id": "oms-e1", "shop_id": "c1", "action": "set_ship_date",
        "order_no": no, "ship_date": date.to_string(), "made_at": chrono::Utc::now().to_rfc3339()});
    async_nats::jetstream::new(oms.clone()).publish("oms.edits.c1", serde_json::to_vec(&edit)?.into()).await?.await?;
    run_as("sink", &["--until-idle"], "sink", sink)?;
    run_as("fetcher", &["--once"], "fetcher", fetcher)?;
    run_as("normalizer", &["--until-idle"], "normalizer", normalizer)?;
    run_as("sink", &["--until-idle"], "sink", sink)?;
    use futures::StreamExt;
    let states = dep.query("SELECT state FROM commands FINAL WHERE command_id = 'oms-e1'").await?;
    assert_eq!(states, vec![vec!["applied".to_owned()]], "the edit became a command, applied");
    let got = tokio::time::timeout(Duration::from_secs(10), results.next()).await?;
    assert!(got.is_some(), "the OMS user read the command's result");
    assert!(tokio::time::timeout(Duration::from_secs(10), orders.next()).await?.is_some(), "and orders");
    assert!(oms_refused.lock().expect("violations").is_empty(), "{:?}", oms_refused.lock().unwrap());

    // Each user refused outside its list: forging raw rows or orders, commanding writes on Qoo10,
    // reading another's inbox or the pipeline's internals, deleting a stream.
    let cases: [(&str, &str, &[&str], &[&str]); 4] = [
        (
            "fetcher",
            fetcher,
            &["orders.c1", "qoo10.commands.c1", "oms.edits.c1", "$JS.API.STREAM.DELETE.ORDERS"],
            &["_INBOX_sink.>", "orders.>"],
        ),
        (
            "normalizer",
            normalizer,
            &["qoo10.commands.c1", "qoo10.raw.c1", "alerts.item_added.c1", "$JS.API.STREAM.PURGE.QOO10_RAW"],
            &["_INBOX_sink.>", "qoo10.raw.>"],
        ),
        (
            "sink",
            sink,
            &["qoo10.raw.c1", "orders.c1", "qoo10.state.c1", "$JS.API.STREAM.DELETE.ALERTS"],
            &["_INBOX_fetcher.>", "qoo10.raw.>"],
        ),
        (
            "oms",
            passwords[3].1,
            &["qoo10.raw.c1", "orders.c1", "alerts.item_added.c1", "$JS.API.CONSUMER.MSG.NEXT.ORDERS.sink"],
            &["qoo10.raw.>", "_INBOX_sink.>", "dlq.>"],
        ),
    ];
    for (user, password, publishes, subscriptions) in cases {
        let (client, violations) = client_as(&node.url(), user, password).await?;
        for subject in publishes {
            client.publish(subject.to_string(), "forged".into()).await?;
            client.flush().await?;
            assert!(
                refused(&violations, subject).await,
                "{user} may publish on {subject}: {:?}",
                violations.lock().unwrap()
            );
        }
        for subject in subscriptions {
            let _sub = client.subscribe(subject.to_string()).await?;
            client.flush().await?;
            assert!(refused(&violations, subject).await, "{user} may subscribe to {subject}");
        }
    }
    let out = dep.run_env(
        "fetcher",
        &["--once"],
        &[("NATS_USER", "fetcher"), ("NATS_PASSWORD", "wrong")],
        Duration::from_secs(30),
    )?;
    assert_eq!(out.status.code(), Some(1), "a wrong password fails at once");
    Ok(())
}
