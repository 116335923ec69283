//! Security: NATS authentication (user/password, token) and TLS with client certificates, and
//! known secret values pushed through every failure path, then searched for in everything the
//! pipeline printed, published or stored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{Deployment, NatsNode, Sandbox, TempDir, unique};

fn shop_toml(sandbox: &Sandbox, api_key: &str, password: &str) -> String {
    format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\nretry_budget = \"3s\"\n\n\
         [[shops]]\nid = \"sec\"\nuser_id = \"sandbox-seller-1\"\napi_key = \"{api_key}\"\npassword = \"{password}\"\n\
         lookback_days = 7\n",
        sandbox.base_url()
    )
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let dir = TempDir::new(&unique("pki"))?;
        let d = dir.0.display().to_string();
        let script = format!(
            "set -e; cd {d}
             openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=qoo10-test-ca
             for who in server client; do
               openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=$who
               printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > $who.ext
               openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 -extfile $who.ext
             done"
        );
        let out = Command::new("bash").arg("-c").arg(&script).output()?;
        anyhow::ensure!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        Ok(Pki { dir })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

async fn orders_stored(dep: &Deployment) -> anyhow::Result<u64> {
    Ok(dep.count("SELECT count() FROM orders FINAL").await)
}

/// The pipeline runs against a server that requires `args`, configured with `good`; with `bad`
/// instead, the fetcher fails at once, says why, and does not print the secret.
async fn authenticated(args: &[&str], scheme: &str, good: &str, bad: &str, secret: &str) -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "15"]).await?;
    let node = NatsNode::single(args).await?;
    let url = node.url().replace("nats://", scheme);
    let dep = Deployment::on_nats(&url, &shop_toml(&sandbox, "sandbox-api-key-1", "sandbox-password-1")).await?;
    let plain = std::fs::read_to_string(&dep.config_path)?;
    dep.add_nats_settings(good)?;
    dep.run_pipeline_once()?;
    assert!(orders_stored(&dep).await? > 0, "orders went through the authenticated NATS");

    std::fs::write(&dep.config_path, &plain)?;
    dep.add_nats_settings(bad)?;
    let out = dep.run("fetcher", &["--once"], Duration::from_secs(30))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
    assert!(!stderr.contains(secret), "the secret is printed: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_user_and_password() -> anyhow::Result<()> {
    let secret = "Nats-Pw-3e1f0a";
    authenticated(
        &["--user", "pipeline", "--pass", secret],
        "nats://",
        &format!("user = \"pipeline\"\npassword = \"{secret}\""),
        &format!("user = \"pipeline\"\npassword = \"{secret}-wrong\""),
        secret,
    )
    .await
}

/// Credentials written in the NATS URL authenticate, and are printed nowhere: not by
/// `--print-config`, not in the error a wrong one gives, not in the logs.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_a_url_are_used_and_never_printed() -> anyhow::Result<()> {
    let secret = "Url-Pw-9c2d7b";
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "15"]).await?;
    let node = NatsNode::single(&["--user", "pipeline", "--pass", secret]).await?;
    let good = node.url().replace("nats://", &format!("nats://pipeline:{secret}@"));
    let dep = Deployment::on_nats(&good, &shop_toml(&sandbox, "sandbox-api-key-1", "sandbox-password-1")).await?;
    let runs = [("fetcher", "--once"), ("normalizer", "--until-idle"), ("sink", "--until-idle")];
    let mut printed = String::new();
    for (name, arg) in runs {
        let out = dep.run_env(name, &[arg], &[("RUST_LOG", "debug")], Duration::from_secs(120))?;
        printed += &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {printed}");
    }
    assert!(orders_stored(&dep).await? > 0, "orders went through NATS with the URL's credentials");
    let shown = dep.run_ok("fetcher", &["--print-config"])?;
    printed += &String::from_utf8_lossy(&shown.stdout);
    assert!(printed.contains("nats://127.0.0.1:"), "the URL is shown without its user info");

    let wrong = node.url().replace("nats://", &format!("nats://pipeline:{secret}-wrong@"));
    let out = dep.run_env("fetcher", &["--once"], &[("NATS_URL", &wrong)], Duration::from_secs(30))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
    printed += &stderr;
    assert!(!printed.contains(secret), "{}", around(&printed, secret));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_token_from_a_file() -> anyhow::Result<()> {
    let secret = "Nats-Token-9b7c55";
    let dir = TempDir::new(&unique("token"))?;
    let file = dir.0.join("nats-token");
    std::fs::write(&file, format!("{secret}\n"))?;
    authenticated(
        &["--auth", secret],
        "nats://",
        &format!("token_file = \"{}\"", path(&file)),
        &format!("token = \"{secret}-wrong\""),
        secret,
    )
    .await
}

/// Decentralized authentication: an operator, an account with JetStream and a user, as `nsc`
/// would make them; the user's `.creds` file is all the services get.
#[tokio::test(flavor = "multi_thread")]
async fn nats_credentials_file() -> anyhow::Result<()> {
    use base64::Engine;
    use nkeys::KeyPair;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwt = |issuer: &KeyPair, subject: &KeyPair, name: &str, nats: serde_json::Value| {
        let claims = serde_json::json!({
            "jti": unique("jti").to_uppercase(), "iat": chrono::Utc::now().timestamp(), "iss": issuer.public_key(),
            "sub": subject.public_key(), "name": name, "nats": nats,
        });
        let input = format!("{}.{}", b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#), b64(&serde_json::to_vec(&claims)?));
        let signature = issuer.sign(input.as_bytes()).map_err(|e| anyhow::anyhow!("sign: {e}"))?;
        anyhow::Ok(format!("{input}.{}", b64(&signature)))
    };
    let limits = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1,
        "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let user_claims =
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2});
    let dir = TempDir::new(&unique("creds"))?;
    let creds = |user: &KeyPair, user_jwt: &str, file: &str| {
        let seed = user.seed().map_err(|e| anyhow::anyhow!("seed: {e}"))?;
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n             ************************* IMPORTANT *************************\n\n             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let path = dir.0.join(file);
        std::fs::write(&path, text)?;
        anyhow::Ok((path, seed))
    };

    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let operator_jwt =
        jwt(&operator, &operator, "test-operator", serde_json::json!({"type": "operator", "version": 2}))?;
    let account_jwt =
        jwt(&operator, &account, "qoo10", serde_json::json!({"limits": limits, "type": "account", "version": 2}))?;
    // JetStream needs a system account in operator mode.
    let system = KeyPair::new_account();
    let system_jwt = jwt(&operator, &system, "SYS", serde_json::json!({"type": "account", "version": 2}))?;
    let (good, seed) = creds(&user, &jwt(&account, &user, "pipeline", user_claims.clone())?, "pipeline.creds")?;
    // A user of an account the server does not know.
    let (stranger, stranger_account) = (KeyPair::new_user(), KeyPair::new_account());
    let (bad, _) = creds(&stranger, &jwt(&stranger_account, &stranger, "stranger", user_claims)?, "stranger.creds")?;
    let conf = dir.0.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
            sys = system.public_key(),
            acc = account.public_key()
        ),
    )?;
    authenticated(
        &["-c", &path(&conf)],
        "nats://",
        &format!("credentials_file = \"{}\"", path(&good)),
        &format!("credentials_file = \"{}\"", path(&bad)),
        &seed,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_tls_with_client_certificates() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let (ca, cert, key) = (path(&pki.file("ca.pem")), path(&pki.file("server.pem")), path(&pki.file("server.key")));
    let (client_cert, client_key) = (path(&pki.file("client.pem")), path(&pki.file("client.key")));
    authenticated(
        &["--tls", "--tlscert", &cert, "--tlskey", &key, "--tlsverify", "--tlscacert", &ca],
        "tls://",
        &format!("tls_ca_file = \"{ca}\"\ntls_cert_file = \"{client_cert}\"\ntls_key_file = \"{client_key}\""),
        // Trusts the server but shows no client certificate: the server refuses it.
        &format!("tls_ca_file = \"{ca}\""),
        "PRIVATE KEY",
    )
    .await
}

/// Known secret values go through every failure path; none may appear in any output, message or
/// row. RUST_LOG=debug, so dependencies' debug logs are searched too.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_logs_errors_messages_or_tables() -> anyhow::Result<()> {
    const API_KEY: &str = "Qx-ApiKey-51be0d77";
    const QOO10_PW: &str = "Qx-Pw+7f3a/9c21";
    const NATS_PW: &str = "Nx-Pw-c0ffee42";
    const CH_PW: &str = "Cx-Pw-deadbe11";
    const CENTER_TOKEN: &str = "Hx-Token-77aa01";
    let secrets = [API_KEY, QOO10_PW, NATS_PW, CH_PW, CENTER_TOKEN];
    let debug = [("RUST_LOG", "debug")];
    let mut captured: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, out: &std::process::Output| {
        captured.push((what.to_owned(), String::from_utf8_lossy(&out.stdout).into_owned()));
        captured.push((what.to_owned(), String::from_utf8_lossy(&out.stderr).into_owned()));
    };

    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "20"]).await?;
    let shop = |api_key: &str, pw: &str| serde_json::json!({"id": "sandbox-1", "user_id": "sandbox-seller-1", "api_key": api_key, "password": pw});
    sandbox.post_json("/_sandbox/shops", &shop(API_KEY, QOO10_PW)).await?;
    let node = NatsNode::single(&["--user", "pipeline", "--pass", NATS_PW]).await?;
    // Query style puts the certification key in the URL: the riskiest style for leaks.
    let dep = Deployment::on_nats(
        &node.url(),
        &shop_toml(&sandbox, API_KEY, QOO10_PW).replace("retry_budget", "url_style = \"query\"\nretry_budget"),
    )
    .await?;
    dep.add_nats_settings(&format!("user = \"pipeline\"\npassword = \"{NATS_PW}\""))?;
    // The deployment set the tests' usual token; this test's own secret replaces it.
    let config = std::fs::read_to_string(&dep.config_path)?;
    anyhow::ensure!(config.contains(e2e::CENTER_TOKEN), "the deployment sets a center token");
    std::fs::write(&dep.config_path, config.replace(e2e::CENTER_TOKEN, CENTER_TOKEN))?;
    let good = std::fs::read_to_string(&dep.config_path)?;

    // 1. Success, with the key expiring once mid-poll (renewed and retried), then a bad raw row.
    sandbox
        .post_json(
            "/_sandbox/faults",
            &serde_json::json!({"kind": "expire_key", "method": "ShippingBasic.GetShippingInfo_v3", "count": 1}),
        )
        .await?;
    for (name, args) in [("fetcher", &["--once"][..]), ("normalizer", &["--until-idle"]), ("sink", &["--until-idle"])] {
        let out = dep.run_env(name, args, &debug, Duration::from_secs(60))?;
        anyhow::ensure!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        keep(name, &out);
    }
    anyhow::ensure!(orders_stored(&dep).await? > 0, "the success path stored orders");

    // 2. Qoo10 refuses the password (the seller changed it): the shop fails, an alert is raised.
    sandbox.post_json("/_sandbox/shops", &shop(API_KEY, "changed-on-qsm")).await?;
    let out = dep.run_env("fetcher", &["--once"], &debug, Duration::from_secs(60))?;
    anyhow::ensure!(!out.status.success(), "a refused password fails the poll");
    keep("fetcher, refused password", &out);
    let out = dep.run_env("sink", &["--until-idle"], &debug, Duration::from_secs(60))?;
    keep("sink, credentials alert", &out);

    // The alert center: its page, its API answered and refused, and the sink's log meanwhile.
    let mut sink = dep.spawn("sink", &[])?;
    let base = format!("http://127.0.0.1:{}", sink.port);
    sink.wait_readyz(200, Duration::from_secs(30)).await?;
    let mut center: Vec<(String, String)> = Vec::new();
    let paths = [
        ("/", None),
        ("/api/summary", Some(CENTER_TOKEN)),
        ("/api/alerts", Some(CENTER_TOKEN)),
        ("/api/alerts", None),
        ("/api/alerts?state=x", Some(CENTER_TOKEN)),
    ];
    for (path, token) in paths {
        let mut req = e2e::http().get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        let headers = format!("{:?}", r.headers());
        center.push((format!("GET {path}"), format!("{headers} {}", r.text().await?)));
    }
    let wrong = e2e::http().post(format!("{base}/api/alerts/none/acknowledge")).bearer_auth("wrong").send().await?;
    center.push(("POST acknowledge, wrong token".into(), format!("{} {}", wrong.status(), wrong.text().await?)));
    let _ = sink.terminate();
    center.push(("sink log (alert center)".into(), std::fs::read_to_string(&sink.log)?));

    // 3. NATS refuses the password.
    std::fs::write(&dep.config_path, good.replace(NATS_PW, &format!("{NATS_PW}-old")))?;
    let out = dep.run_env("fetcher", &["--once"], &debug, Duration::from_secs(30))?;
    anyhow::ensure!(!out.status.success(), "a refused NATS password fails the start");
    keep("fetcher, NATS refused", &out);

    // 4. ClickHouse refuses the password: the sink fails at once (waiting cannot cure it).
    std::fs::write(&dep.config_path, good.replace("database =", &format!("password = \"{CH_PW}\"\ndatabase =")))?;
    let started = std::time::Instant::now();
    let out = dep.run_env("sink", &["--until-idle"], &debug, Duration::from_secs(30))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(!out.status.success(), "a refused ClickHouse password fails the start: {stderr}");
    anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "fails fast, does not wait: {stderr}");
    anyhow::ensure!(stderr.contains("ClickHouse"), "{stderr}");
    keep("sink, ClickHouse refused", &out);
    std::fs::write(&dep.config_path, &good)?;

    captured.extend(center);

    // Everything printed, every message on every stream of the deployment, every stored row.
    let client = async_nats::ConnectOptions::with_user_and_password("pipeline".into(), NATS_PW.into())
        .connect(node.url())
        .await?;
    let js = async_nats::jetstream::new(client);
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    // Every stream of the deployment (the list is the contract's, so a new stream is covered).
    for stream_kind in schemas::subjects::Stream::ALL {
        let base = stream_kind.base();
        let Ok(mut stream) = js.get_stream(ns.stream(stream_kind)).await else { continue };
        let state = stream.info().await?.state.clone();
        if state.messages == 0 {
            continue;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                let headers = format!("{:?}", m.headers);
                captured.push((
                    format!("{base} #{seq}"),
                    format!("{} {headers} {}", m.subject, String::from_utf8_lossy(&m.payload)),
                ));
            }
        }
    }
    for table in ["orders", "order_versions", "order_contacts", "alerts", "oms_expectations"] {
        let rows = dep.query(&format!("SELECT * FROM {table}")).await?;
        captured.push((table.to_owned(), format!("{rows:?}")));
    }
    let alerts = dep.query("SELECT kind FROM alerts FINAL WHERE kind = 'credentials_invalid'").await?;
    anyhow::ensure!(!alerts.is_empty(), "the refused password raised credentials_invalid");
    // The certification keys the sandbox issued (the first expired mid-poll, then renewed).
    let issued = sandbox.get_json("/_sandbox/keys").await?;
    let keys: Vec<String> =
        issued.as_array().into_iter().flatten().filter_map(|k| k["key"].as_str().map(str::to_owned)).collect();
    anyhow::ensure!(keys.len() >= 2, "the sandbox issued a key and its renewal: {issued}");
    let secrets: Vec<&str> = secrets.iter().copied().chain(keys.iter().map(String::as_str)).collect();
    let total: usize = captured.iter().map(|(_, t)| t.len()).sum();
    anyhow::ensure!(total > 50_000, "too little captured to mean anything: {total} bytes");
    for (what, text) in &captured {
        for &secret in &secrets {
            let encoded: String = url_encode(secret);
            anyhow::ensure!(
                !text.contains(secret) && !text.contains(&encoded),
                "{secret} appears in {what}: …{}…",
                around(text, secret)
            );
        }
    }
    Ok(())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn around(text: &str, needle: &str) -> String {
    let i = text.find(needle).unwrap_or(0);
    text.chars().skip(text[..i].chars().count().saturating_sub(120)).take(240).collect()
}

/// ClickHouse over HTTPS (a TLS proxy in front of the shared server): a certificate the sink does
/// not trust stops it at once; with the CA added through `SSL_CERT_FILE` it writes.
#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_over_https() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let servers = e2e::servers().await;
    let upstream = servers.clickhouse_url.trim_start_matches("http://").trim_end_matches('/');
    let proxy = e2e::TlsProxy::start(upstream, &pki.file("server.pem"), &pki.file("server.key")).await?;
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "15"]).await?;
    let dep = Deployment::new(&shop_toml(&sandbox, "sandbox-api-key-1", "sandbox-password-1")).await?;
    dep.clickhouse_via(&format!("https://{}", proxy.addr))?;
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;

    let started = std::time::Instant::now();
    let out = dep.run("sink", &["--until-idle"], Duration::from_secs(30))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "says why: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "fails at once, does not wait");

    let ca = path(&pki.file("ca.pem"));
    let out = dep.run_env("sink", &["--until-idle"], &[("SSL_CERT_FILE", &ca)], Duration::from_secs(60))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(orders_stored(&dep).await? > 0, "orders written over HTTPS");
    Ok(())
}

/// The per-shop permission example of docs/security.md, on a real server: a user allowed only
/// shop-a's consumers reads shop-a's orders and cannot read shop-b's.
#[tokio::test(flavor = "multi_thread")]
async fn nats_permissions_confine_a_consumer_to_its_shop() -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    let dir = TempDir::new(&unique("perm"))?;
    let conf = dir.0.join("nats.conf");
    let p = "perm"; // the subject prefix of this deployment: `perm.orders.<shop>`, stream PERM_ORDERS
    std::fs::write(
        &conf,
        format!(
            r#"authorization {{
  users = [
    {{ user: "pipeline", password: "pipeline-pw" }}
    {{
      user: "oms-shop-a", password: "oms-pw"
      permissions: {{
        publish: {{
          allow: [
            "$JS.API.STREAM.INFO.PERM_ORDERS",
            "$JS.API.CONSUMER.CREATE.PERM_ORDERS.oms-shop-a.{p}.orders.shop-a",
            "$JS.API.CONSUMER.INFO.PERM_ORDERS.oms-shop-a",
            "$JS.API.CONSUMER.MSG.NEXT.PERM_ORDERS.oms-shop-a",
            "$JS.ACK.PERM_ORDERS.oms-shop-a.>",
          ]
        }}
        subscribe: {{ allow: ["_INBOX.>"] }}
      }}
    }}
  ]
}}
"#
        ),
    )?;
    let node = NatsNode::single(&["-c", &path(&conf)]).await?;
    let pipeline = async_nats::ConnectOptions::with_user_and_password("pipeline".into(), "pipeline-pw".into())
        .connect(node.url())
        .await?;
    let js = async_nats::jetstream::new(pipeline);
    let cfg = schemas::config::NatsConfig { subject_prefix: p.into(), ..Default::default() };
    runtime::nats::ensure_streams(&js, &cfg).await?;
    for shop in ["shop-a", "shop-b"] {
        js.publish(format!("{p}.orders.{shop}"), format!("order of {shop}").into()).await?.await?;
    }

    let oms = async_nats::ConnectOptions::with_user_and_password("oms-shop-a".into(), "oms-pw".into())
        .connect(node.url())
        .await?;
    let oms_js = async_nats::jetstream::new(oms.clone());
    let stream = oms_js.get_stream("PERM_ORDERS").await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("oms-shop-a".into()),
            filter_subject: format!("{p}.orders.shop-a"),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.fetch().max_messages(10).expires(std::time::Duration::from_secs(1)).messages().await?;
    let mut got = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    assert_eq!(got, vec!["order of shop-a".to_string()], "shop-a's orders, nothing else");

    // Another shop's consumer, an unfiltered one, a plain subscription: all refused.
    let other = stream
        .create_consumer(pull::Config {
            durable_name: Some("oms-shop-a-peeks-at-b".into()),
            filter_subject: format!("{p}.orders.shop-b"),
            ..Default::default()
        })
        .await;
    assert!(other.is_err(), "a consumer on shop-b's orders must be refused");
    let unfiltered =
        stream.create_consumer(pull::Config { durable_name: Some("peek".into()), ..Default::default() }).await;
    assert!(unfiltered.is_err(), "an unfiltered consumer must be refused");
    let mut sub = oms.subscribe(format!("{p}.orders.shop-b")).await?;
    js.publish(format!("{p}.orders.shop-b"), "another order of shop-b".into()).await?.await?;
    let leaked = tokio::time::timeout(std::time::Duration::from_secs(1), sub.next()).await;
    assert!(!matches!(leaked, Ok(Some(_))), "a subscription to shop-b's subject must deliver nothing");
    Ok(())
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The least-privilege ClickHouse users of docs/security.md, as ClickHouse 18.16 (Debian's
/// package, no SQL access control) allows them: `users.xml` users confined to databases, and the
/// analysts' tables as `Distributed` tables that read the pipeline's database through an
/// internal read-only user. The pipeline runs end to end as the sink writer; the writer reaches
/// nothing but its database; the analyst reads orders, alerts and the views' figures, and can
/// neither read `order_contacts` (nor anything else of the pipeline's database) nor write.
#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_least_privilege_users() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "15"]).await?;
    let mut dep = Deployment::new(&shop_toml(&sandbox, "sandbox-api-key-1", "sandbox-password-1")).await?;
    let (db, an) = (dep.database.clone(), format!("{}_analytics", dep.database));
    let user = |name: &str, password: &str, profile: &str, database: &str| {
        format!(
            "<{name}><password_sha256_hex>{}</password_sha256_hex><networks><ip>127.0.0.1</ip></networks>\
             <profile>{profile}</profile><quota>default</quota>\
             <allow_databases><database>{database}</database></allow_databases></{name}>",
            sha256_hex(password)
        )
    };
    let users_xml = format!(
        "<?xml version=\"1.0\"?>\n<yandex>\n<profiles><default></default><read_only><readonly>1</readonly><prefer_localhost_replica>0</prefer_localhost_replica></read_only></profiles>\n\
         <users>\n<default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>\n\
         {}\n{}\n{}\n</users>\n\
         <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows>\
         <read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>\n</yandex>\n",
        user("qoo10_sink", "sink-pw", "default", &db),
        user("qoo10_analyst", "analyst-pw", "read_only", &an),
        user("qoo10_pipeline_reader", "reader-pw", "read_only", &db),
    );
    let remote = "<remote_servers><qoo10_pipeline><shard><replica><host>127.0.0.1</host><port>{tcp_port}</port>\
                  <user>qoo10_pipeline_reader</user><password>reader-pw</password></replica></shard></qoo10_pipeline></remote_servers>";
    let ch = e2e::ClickHouseNode::start(Some(&users_xml), remote).await?;
    dep.on_clickhouse(&ch.url())?;
    // The services connect as the writer; the database is made once by an administrator.
    let config = std::fs::read_to_string(&dep.config_path)?;
    let database_line = format!("database = \"{db}\"\n");
    anyhow::ensure!(config.contains(&database_line), "no database line in {config}");
    std::fs::write(
        &dep.config_path,
        config.replacen(&database_line, &format!("{database_line}user = \"qoo10_sink\"\npassword = \"sink-pw\"\n"), 1),
    )?;
    ch.query_as("default", "", &format!("CREATE DATABASE {db}")).await?;

    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    dep.run_ok("sink", &["--until-idle"])?;
    let admin_count = |sql: String| {
        let ch = &ch;
        async move { anyhow::Ok(ch.query_as("default", "", &sql).await?.trim().parse::<u64>()?) }
    };
    let orders = admin_count(format!("SELECT count() FROM {db}.orders FINAL")).await?;
    let contacts = admin_count(format!("SELECT count() FROM {db}.order_contacts")).await?;
    assert!(orders > 0 && contacts > 0, "the writer stored orders ({orders}) and contacts ({contacts})");
    // Retention's ALTER … DELETE runs as the writer too (0 days: every contact goes).
    dep.run_ok("sink", &["retention", "--contacts-days", "0"])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while admin_count(format!("SELECT count() FROM {db}.order_contacts")).await? > 0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the retention mutation did not complete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let denied = |result: anyhow::Result<String>, what: &str| match result {
        Ok(text) => panic!("{what}: allowed, answered {text:?}"),
        Err(e) => e.to_string(),
    };
    // The writer: its database only.
    let e =
        denied(ch.query_as("qoo10_sink", "sink-pw", "CREATE DATABASE elsewhere").await, "writer creates a database");
    assert!(e.contains("Access denied to database elsewhere"), "{e}");
    ch.query_as("default", "", &format!("CREATE DATABASE {an}")).await?;

    // The analysts' database: every table and view but order_contacts, read through the pipeline
    // reader (as an administrator would create them).
    for t in
        ["orders", "order_versions", "alerts", "oms_expectations", "daily_sales", "orders_by_status", "open_alerts"]
    {
        ch.query_as(
            "default",
            "",
            &format!("CREATE TABLE {an}.{t} AS {db}.{t} ENGINE = Distributed(qoo10_pipeline, {db}, {t})"),
        )
        .await?;
    }
    let sql = format!("SELECT count() FROM {an}.orders");
    let e = denied(ch.query_as("qoo10_sink", "sink-pw", &sql).await, "writer reads another database");
    assert!(e.contains("Access denied"), "{e}");
    let seen = ch.query_as("qoo10_analyst", "analyst-pw", &format!("SELECT count() FROM {an}.orders FINAL")).await?;
    assert_eq!(seen.trim().parse::<u64>()?, orders, "the analyst sees every order");
    let daily = ch.query_as("qoo10_analyst", "analyst-pw", &format!("SELECT count() FROM {an}.daily_sales")).await?;
    assert!(daily.trim().parse::<u64>()? > 0, "and the views' figures");
    // The pipeline's own database is closed to the analyst; the analysts' one has no contacts.
    for (sql, refusal) in [
        (format!("SELECT count() FROM {db}.order_contacts"), format!("Access denied to database {db}")),
        (format!("SELECT count() FROM {db}.orders"), format!("Access denied to database {db}")),
        (format!("SELECT count() FROM {an}.order_contacts"), format!("Table {an}.order_contacts doesn't exist")),
    ] {
        let e = denied(ch.query_as("qoo10_analyst", "analyst-pw", &sql).await, &sql);
        assert!(e.contains(&refusal), "{sql}: {e}");
    }
    for sql in [
        format!(
            "CREATE TABLE {an}.c AS {db}.order_contacts ENGINE = Distributed(qoo10_pipeline, {db}, order_contacts)"
        ),
        format!("INSERT INTO {an}.orders SELECT * FROM {an}.orders LIMIT 1"),
    ] {
        let e = denied(ch.query_as("qoo10_analyst", "analyst-pw", &sql).await, &sql);
        assert!(e.contains("readonly"), "{sql}: {e}");
    }
    Ok(())
}
