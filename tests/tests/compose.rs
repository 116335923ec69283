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
    for user in ["fetcher", "normalizer", "sink"] {
        let var = format!("NATS_{}_PASSWORD", user.to_uppercase());
        assert!(conf.contains(&format!("{{ user: {user}, password: ${var} }}")), "{user} in nats.conf");
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
    let env_example = read(".env.example");
    for var in ["NATS_FETCHER_PASSWORD", "CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_SINK_PASSWORD", "SINK_HTTP_TOKEN"] {
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

/// deploy/nats.conf on nats-server: no anonymous client; each service's user carries the
/// pipeline from Qoo10 to ClickHouse.
#[tokio::test(flavor = "multi_thread")]
async fn the_compose_nats_configuration_admits_each_service_and_no_one_else() -> anyhow::Result<()> {
    let passwords = [("fetcher", "pw-f-1a2b"), ("normalizer", "pw-n-3c4d"), ("sink", "pw-s-5e6f")];
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
    let dep = Deployment::on_nats(
        &node.url(),
        &format!(
            "[qoo10]\nbase_url = \"{}\"\n\n[[shops]]\nid = \"c1\"\nuser_id = \"sandbox-seller-1\"\n\
             api_key = \"sandbox-api-key-1\"\npassword = \"sandbox-password-1\"\n",
            sandbox.base_url()
        ),
    )
    .await?;
    let args = [("fetcher", "--once"), ("normalizer", "--until-idle"), ("sink", "--until-idle")];
    for ((name, arg), (user, password)) in args.iter().zip(passwords) {
        let out =
            dep.run_env(name, &[arg], &[("NATS_USER", user), ("NATS_PASSWORD", password)], Duration::from_secs(120))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(!stderr.contains(password), "{name} printed its password");
    }
    assert!(dep.count("SELECT count() FROM orders FINAL").await > 0);
    let out = dep.run_env(
        "fetcher",
        &["--once"],
        &[("NATS_USER", "fetcher"), ("NATS_PASSWORD", "wrong")],
        Duration::from_secs(30),
    )?;
    assert_eq!(out.status.code(), Some(1), "a wrong password fails at once");
    Ok(())
}
