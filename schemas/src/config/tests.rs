//! The configuration's loading rules, checked on text.

use super::*;
use crate::status;

fn load_str(text: &str) -> Result<PipelineConfig, ConfigError> {
    PipelineConfig::from_text(text, "pipeline.toml")
}

fn defaults() -> PipelineConfig {
    load_str("").unwrap()
}

#[test]
fn the_contract_example_parses() {
    let c = load_str(
        r#"
[nats]
url = "nats://127.0.0.1:4222"
[clickhouse]
url = "http://127.0.0.1:8123"
database = "qoo10"
user = "default"
[qoo10]
base_url = "https://api.qoo10.jp/GMKT.INC.Front.QAPIService/ebayjapan.qapi"
requests_per_second = 1
global_requests_per_second = 10
[[shops]]
id = "my-shop"
api_key = "k"
user_id = "my-qsm-login"
password_env = "PATH" # any variable that is set
statuses = [1, 2, 3, 4, 5]
lookback_days = 7
interval = "30m"
claims = true
[normalizer]
destination_status = "new"
"#,
    )
    .unwrap();
    assert_eq!(c.shops[0].interval, Duration::from_secs(1800));
    assert_eq!(c.shops[0].api_key().expose(), "k");
    assert_eq!(c.shops[0].password().expose(), std::env::var("PATH").unwrap());
    assert_eq!(c.qoo10.requests_per_second, 1.0);
}

#[test]
fn mistakes_name_the_key() {
    let cases = [
        ("[nats]\nurl2 = \"x\"\n", "nats.url2"),
        ("[nats]\nurl = 5\n", "nats.url"),
        ("[[shops]]\nid = \"Bad Shop\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\n", "shops[0].id"),
        (
            "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\ninterval = \"soon\"\n",
            "shops[0].interval",
        ),
        (
            "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\nstatuses = [7]\n",
            "shops[0].statuses",
        ),
        ("[normalizer]\ndestination_status = \"shinki\"\n", "normalizer.destination_status"),
        ("[nats]\nuser = \"sink\"\npassword = \"change-me-sink\"\n", "nats.password"),
        ("[clickhouse]\npassword = \"change-me-sink\"\n", "clickhouse.password"),
        ("[sink]\nhttp_token = \"change-me-alert-center\"\n", "sink.http_token"),
        ("[sink]\nhttp_token = \"\"\n", "sink.http_token"),
        ("[clickhouse]\ndatabase = \"a.b\"\n", "clickhouse.database"),
        ("[normalizer.claim_status_map]\n\"7\" = \"cancelled\"\n", "normalizer.claim_status_map.7"),
        ("[normalizer.shipping_status_map]\n\"3\" = \"ready\"\n", "normalizer.shipping_status_map.3"),
    ];
    for (text, key) in cases {
        let err = load_str(text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`:")), "{err:?} should name {key}");
        assert!(err.starts_with("pipeline.toml"), "{err:?} should name the file");
        println!("{err}");
        assert!(!err.contains('\n'), "{err:?} should be one line");
    }
}

/// Only the fetcher needs a shop's Qoo10 credentials: a shop with its id alone (or with an `_env`
/// variable this service's environment does not set) loads, and `require_credentials` (the
/// fetcher's check at start) names what is missing.
#[test]
fn credentials_are_required_by_the_fetcher_only() {
    let cases = [
        ("[[shops]]\nid = \"a\"\n", "shops[0].api_key"),
        ("[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\n", "shops[0].password"),
        (
            "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\npassword_env = \"TEST_CFG_SURELY_UNSET\"\n",
            "shops[0].password_env",
        ),
        ("[[shops]]\nid = \"a\"\napi_key = \"k\"\npassword = \"p\"\n", "shops[0].user_id"),
    ];
    for (text, key) in cases {
        let c = load_str(text).expect("the normalizer and the sink accept it");
        assert!(c.shops[0].api_key.is_none() || c.shops[0].password.is_none() || c.shops[0].user_id.is_empty());
        let err = c.require_credentials().unwrap_err().to_string();
        assert!(err.starts_with("pipeline.toml") && err.contains(&format!("`{key}`:")), "{err:?} should name {key}");
    }
    let full = "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\n";
    assert!(load_str(full).unwrap().require_credentials().is_ok());
}

#[test]
fn status_map_overrides_are_data() {
    let c = load_str("[normalizer]\ndestination_status = \"awaiting_shipment\"\n[normalizer.claim_status_map]\n\"14\" = \"returned\"\n").unwrap();
    let m = &c.status_map;
    let s = |shipping, claim| m.canonical(Some(shipping), claim).map(status::Status::as_str);
    assert_eq!(s(2, 0), Some("awaiting_shipment"));
    assert_eq!(s(5, 14), Some("returned"));
    assert_eq!(s(5, 15), Some("partially_refunded"));
}

#[test]
fn print_config_redacts_secrets_and_round_trips() {
    let c = load_str(
        "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"KEY-123\"\npassword = \"PW-456\"\ninterval = \"90s\"\n",
    )
    .unwrap();
    let text = c.to_toml();
    assert!(!text.contains("KEY-123") && !text.contains("PW-456"), "{text}");
    assert!(text.contains("api_key = \"<redacted>\"") && text.contains("interval = \"1m 30s\""), "{text}");
    // What it prints is itself a valid configuration (with the secrets to fill in).
    let back = PipelineConfig::from_text(&text.replace("<redacted>", "x"), "printed").unwrap();
    assert_eq!(back.shops[0].interval, Duration::from_secs(90));
}

#[test]
fn secrets_never_show_in_debug() {
    let c = load_str("[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"KEY-123\"\npassword = \"PW-456\"\n").unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("KEY-123") && !dbg.contains("PW-456"), "{dbg}");
}

#[test]
fn env_overrides_connection_settings() {
    let c = PipelineConfig::build(file::PipelineFile::default(), "env", |k| match k {
        "NATS_URL" => Some("nats://10.0.0.1:4222".into()),
        "CLICKHOUSE_DATABASE" => Some("t1".into()),
        "CLICKHOUSE_PASSWORD" => Some("pw".into()),
        "NATS_USER" => Some("sink".into()),
        "NATS_SUBJECT_PREFIX" => Some("run7".into()),
        "NATS_PASSWORD" => Some("npw".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
    assert_eq!(c.nats.user.as_deref(), Some("sink"));
    assert_eq!(c.nats.subject_prefix, "run7");
    assert_eq!(c.nats.password.as_ref().map(|p| p.expose()), Some("npw"));
    assert_eq!(c.clickhouse.database, "t1");
    assert_eq!(c.clickhouse.password().unwrap().expose(), "pw");
}

/// The documented example is a valid configuration (with its commented shop left out).
#[test]
fn pipeline_toml_example_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipeline.toml.example");
    let text = std::fs::read_to_string(path).unwrap();
    let c = PipelineConfig::from_text(&text, path).unwrap();
    let d = defaults();
    assert_eq!(c.qoo10.requests_per_second, d.qoo10.requests_per_second);
    assert_eq!(c.qoo10.retry_budget, d.qoo10.retry_budget);
    assert_eq!(c.sink.flush_interval, d.sink.flush_interval);
    assert_eq!(c.nats.duplicate_window, d.nats.duplicate_window);
    assert_eq!(c.normalizer.batch_size, d.normalizer.batch_size);
}

/// Credentials written in a URL become the user and password; the URL kept, printed by
/// `--print-config` and shown in errors, holds none.
#[test]
fn user_info_leaves_the_urls() {
    let c = PipelineConfig::build(file::PipelineFile::default(), "env", |k| match k {
        "NATS_URL" => Some("nats://app:Pw%2Fnats@10.0.0.1:4222,nats://app:Pw%2Fnats@10.0.0.2:4222".into()),
        "CLICKHOUSE_URL" => Some("https://qoo10_sink:Pw-ch@ch.internal:8443".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.nats.url, "nats://10.0.0.1:4222,nats://10.0.0.2:4222");
    assert_eq!((c.nats.user.as_deref(), c.nats.password.as_ref().map(|p| p.expose())), (Some("app"), Some("Pw/nats")));
    assert_eq!(c.clickhouse.url, "https://ch.internal:8443");
    assert_eq!(
        (c.clickhouse.user.as_str(), c.clickhouse.password().map(|p| p.expose())),
        ("qoo10_sink", Some("Pw-ch"))
    );
    let shown = format!("{c:?}{}", toml::to_string(&c).unwrap());
    assert!(!shown.contains("Pw") && !shown.contains("Pw%2F"), "{shown}");

    let token = PipelineConfig::build(file::PipelineFile::default(), "env", |k| {
        (k == "NATS_URL").then(|| "nats://T0ken@h:4222".to_owned())
    })
    .unwrap();
    assert_eq!(token.nats.token.as_ref().map(|t| t.expose()), Some("T0ken"));

    let both =
        load_str("[nats]\nurl = \"nats://u:Pw-1@h:4222\"\nuser = \"u\"\npassword = \"x\"\n").unwrap_err().to_string();
    assert!(both.contains("nats.url") && !both.contains("Pw-1"), "{both}");
    let qoo10 = load_str("[qoo10]\nbase_url = \"https://u:Pw-2@qapi.example/x\"\n").unwrap_err().to_string();
    assert!(qoo10.contains("qoo10.base_url") && !qoo10.contains("Pw-2"), "{qoo10}");
    let bad = load_str("[clickhouse]\nurl = \"ftp://u:Pw-3@h\"\n").unwrap_err().to_string();
    assert!(bad.contains("clickhouse.url") && !bad.contains("Pw-3"), "{bad}");
}

#[test]
fn stream_retention_is_configurable_and_bounded() {
    let c = load_str("[nats.retention]\nraw = \"3days\"\ndlq = \"7days\"\n").unwrap();
    let r = c.nats.retention;
    assert_eq!(
        (r.raw, r.dlq, r.orders),
        (Duration::from_secs(3 * 86_400), Duration::from_secs(7 * 86_400), Duration::from_secs(30 * 86_400))
    );
    assert_eq!(r.max_age(crate::subjects::Stream::Raw), Duration::from_secs(3 * 86_400));
    let e = load_str("[nats.retention]\norders = \"2h\"\n").unwrap_err().to_string();
    assert!(e.contains("nats.retention.orders"), "{e}");
    let e = load_str("[nats.retention]\nrow = \"3days\"\n").unwrap_err().to_string();
    assert!(e.contains("row"), "{e}");
}

/// The alert center's token: inline, from the environment or a file (one of the three), never
/// printed; the webhook's digest settings are checked at load.
#[test]
fn the_alert_center_token_and_the_webhook_settings() {
    let dir = std::env::temp_dir().join(format!("qoo10-cfg-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let from_file =
        PipelineConfig::from_text(&format!("[sink]\nhttp_token_file = {:?}\n", file.display().to_string()), "t")
            .unwrap();
    assert_eq!(from_file.sink.http_token().map(|t| t.expose()), Some("from-a-file"));
    let inline = PipelineConfig::from_text("[sink]\nhttp_token = \"s3cret-token\"\n", "t").unwrap();
    assert!(!inline.to_toml().contains("s3cret-token"), "{}", inline.to_toml());
    assert!(!format!("{inline:?}").contains("s3cret-token"));
    let both = PipelineConfig::from_text("[sink]\nhttp_token = \"a\"\nhttp_token_env = \"B\"\n", "t").unwrap_err();
    assert!(both.to_string().contains("sink.http_token"), "{both}");
    let unset = PipelineConfig::from_text("[sink]\nhttp_token_env = \"QOO10_NO_SUCH_VARIABLE\"\n", "t").unwrap_err();
    assert!(unset.to_string().contains("QOO10_NO_SUCH_VARIABLE"), "{unset}");
    assert!(defaults().sink.http_token().is_none());
    let bad = PipelineConfig::from_text("[alerts]\npage_url = \"ftp://x/\"\n", "t").unwrap_err();
    assert!(bad.to_string().contains("alerts.page_url"), "{bad}");
    let mode = PipelineConfig::from_text("[alerts]\nwebhook_mode = \"hourly\"\n", "t").unwrap_err();
    assert!(mode.to_string().contains("webhook_mode"), "{mode}");
    assert_eq!(defaults().alerts.webhook_mode, crate::config::WebhookMode::Digest);
    let _ = std::fs::remove_dir_all(&dir);
}
