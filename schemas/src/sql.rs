//! ClickHouse tables, as versioned migrations.
//!
//! Every statement is idempotent (`IF NOT EXISTS`) and runs on ClickHouse 18.16 and current
//! releases: no `DateTime64`, no `Map`, no TTL, no CTEs. Idempotence of the data comes from
//! `ReplacingMergeTree(version)` keyed by the natural key; read the latest state with `FINAL`.
//! No table is partitioned by a value that could change for a key: ReplacingMergeTree only
//! replaces rows within one partition.

/// One migration: applied in order, recorded in `schema_migrations`.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: &'static [&'static str],
    /// Columns added to tables that exist, (table, column, type), added before `statements`
    /// run. ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, so the sink adds each column
    /// that `system.columns` lacks (a crash half-way through leaves nothing to trip over).
    pub added_columns: &'static [(&'static str, &'static str, &'static str)],
}

/// Columns shared by `orders` and `order_versions`, in the order the sink writes them.
pub const ORDER_COLUMNS: &str = "
    shop_id String,
    order_no UInt64,
    pack_no UInt64,
    status String,
    qoo10_status UInt8,
    claim_status UInt8,
    item_code String,
    seller_item_code String,
    item_title String,
    option_text String,
    option_code String,
    quantity UInt32,
    order_price Decimal(18,2),
    discount Decimal(18,2),
    total Decimal(18,2),
    settle_price Decimal(18,2),
    shipping_rate Decimal(18,2),
    currency String,
    ordered_at DateTime('UTC'),
    paid_at Nullable(DateTime('UTC')),
    estimated_ship_date Nullable(Date),
    shipped_at Nullable(DateTime('UTC')),
    delivered_at Nullable(DateTime('UTC')),
    carrier String,
    tracking_no String,
    payment_method String,
    version UInt64,
    fetched_at DateTime('UTC'),
    source_kind String,
    source_method String,
    raw_seq UInt64,
    option_price Decimal(18,2),
    seller_discount Decimal(18,2),
    cart_discount_seller Decimal(18,2),
    cart_discount_qoo10 Decimal(18,2),
    refund_quantity UInt32,
    refund_amount Decimal(18,2),
    available_ship_date Nullable(Date),
    available_send_type UInt8,
    first_import UInt8,
    new_in_known_cart UInt8";

/// Columns added to both `orders` and `order_versions` (the end of [`ORDER_COLUMNS`], in order:
/// a fresh table and an upgraded one have the same layout, as RowBinary needs).
macro_rules! both_tables {
    ($($c:literal $t:literal),* $(,)?) => {
        &[$(("orders", $c, $t),)* $(("order_versions", $c, $t),)*]
    };
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "orders, order_versions, order_contacts",
    statements: &[
        // Placeholders `{columns}` are filled by `statements()`.
        "CREATE TABLE IF NOT EXISTS orders ({columns}) ENGINE = ReplacingMergeTree(version) ORDER BY (shop_id, order_no)",
        "CREATE TABLE IF NOT EXISTS order_versions ({columns}) ENGINE = ReplacingMergeTree(version) ORDER BY (shop_id, order_no, version)",
        "CREATE TABLE IF NOT EXISTS order_contacts (
            shop_id String,
            order_no UInt64,
            pack_no UInt64,
            buyer_name String,
            buyer_kana String,
            buyer_tel String,
            buyer_mobile String,
            buyer_email String,
            receiver_name String,
            receiver_kana String,
            receiver_tel String,
            receiver_mobile String,
            zip_code String,
            address String,
            address1 String,
            address2 String,
            country String,
            ordered_at DateTime('UTC'),
            version UInt64,
            fetched_at DateTime('UTC')
        ) ENGINE = ReplacingMergeTree(version) ORDER BY (shop_id, order_no)",
    ],
    added_columns: &[],
}, Migration {
    version: 2,
    name: "alerts and analytics views",
    statements: &[
        "CREATE TABLE IF NOT EXISTS alerts (
            alert_id String,
            kind String,
            shop_id String,
            order_no UInt64,
            pack_no UInt64,
            state String,
            severity String,
            message String,
            message_ja String,
            details String,
            opened_at DateTime('UTC'),
            updated_at DateTime('UTC'),
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY alert_id",
        "CREATE VIEW IF NOT EXISTS daily_sales AS
            SELECT shop_id, toDate(toTimeZone(ordered_at, 'Asia/Tokyo')) AS day_jst, item_code, seller_item_code,
                   any(item_title) AS item_title, count() AS order_lines, sum(quantity) AS units, sum(total) AS sales
            FROM orders FINAL
            WHERE status NOT IN ('cancelled', 'returned', 'refunded')
            GROUP BY shop_id, day_jst, item_code, seller_item_code",
        "CREATE VIEW IF NOT EXISTS orders_by_status AS
            SELECT shop_id, status, count() AS order_lines, uniqExact(pack_no) AS carts, sum(total) AS total
            FROM orders FINAL
            GROUP BY shop_id, status",
        "CREATE VIEW IF NOT EXISTS open_alerts AS
            SELECT alert_id, kind, shop_id, order_no, pack_no, severity, message, message_ja, details, opened_at, updated_at
            FROM alerts FINAL
            WHERE state = 'open'",
    ],
    added_columns: &[],
}, Migration {
    version: 3,
    name: "oms_expectations",
    statements: &["CREATE TABLE IF NOT EXISTS oms_expectations (
            shop_id String,
            edit_key String,
            edit_id String,
            edit String,
            state String,
            made_at DateTime('UTC'),
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY (shop_id, edit_key)"],
    added_columns: &[],
}, Migration {
    version: 4,
    name: "money, partial refunds, 発送可能日 and first-import marks on order lines",
    statements: &[
        // A partial refund is not a sale lost: the refunded amount is, not the line.
        "DROP TABLE IF EXISTS daily_sales",
        "CREATE VIEW IF NOT EXISTS daily_sales AS
            SELECT shop_id, toDate(toTimeZone(ordered_at, 'Asia/Tokyo')) AS day_jst, item_code, seller_item_code,
                   any(item_title) AS item_title, count() AS order_lines, sum(quantity) AS units,
                   sum(total - refund_amount) AS sales
            FROM orders FINAL
            WHERE status NOT IN ('cancelled', 'returned', 'refunded')
            GROUP BY shop_id, day_jst, item_code, seller_item_code",
    ],
    added_columns: both_tables![
        "option_price" "Decimal(18,2)",
        "seller_discount" "Decimal(18,2)",
        "cart_discount_seller" "Decimal(18,2)",
        "cart_discount_qoo10" "Decimal(18,2)",
        "refund_quantity" "UInt32",
        "refund_amount" "Decimal(18,2)",
        "available_ship_date" "Nullable(Date)",
        "available_send_type" "UInt8",
        "first_import" "UInt8",
        "new_in_known_cart" "UInt8",
    ],
}, Migration {
    version: 5,
    name: "commands (write-back results)",
    statements: &["CREATE TABLE IF NOT EXISTS commands (
            command_id String,
            shop_id String,
            order_no UInt64,
            action String,
            state String,
            qoo10_result_code Nullable(Int64),
            reason String,
            reason_ja String,
            requested_at DateTime('UTC'),
            updated_at DateTime('UTC'),
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY (shop_id, command_id)"],
    added_columns: &[],
}, Migration {
    version: 6,
    name: "order_carts: order lines by cart",
    statements: &[
        // The sink's cart lookups (a new line in a known cart, a claim on one line of a cart)
        // read this table by its key instead of scanning order_versions, which is keyed by line:
        // their cost stays flat as history grows. Fed by ClickHouse itself on every insert into
        // order_versions, whoever inserts (a sink of an older release included); the INSERT
        // copies what was stored before the view existed (rows it also caught are replaced by
        // their twins: same key, same version).
        "CREATE TABLE IF NOT EXISTS order_carts (
            shop_id String,
            pack_no UInt64,
            order_no UInt64,
            claim_status UInt8,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY (shop_id, pack_no, order_no)",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS order_carts_feed TO order_carts AS
            SELECT shop_id, pack_no, order_no, claim_status, version FROM order_versions",
        "INSERT INTO order_carts SELECT shop_id, pack_no, order_no, claim_status, version FROM order_versions",
    ],
    added_columns: &[],
}, Migration {
    version: 7,
    name: "alert_acks: alerts taken in hand in the alert center",
    statements: &[
        // One row per acknowledged alert (the alert itself stays in `alerts`, unchanged): read by
        // key when the alert center starts, joined by analysts on alert_id.
        "CREATE TABLE IF NOT EXISTS alert_acks (
            alert_id String,
            shop_id String,
            kind String,
            acknowledged_at DateTime('UTC')
        ) ENGINE = ReplacingMergeTree() ORDER BY alert_id",
    ],
    added_columns: &[],
}, Migration {
    version: 8,
    name: "erasures: personal data erased on request (sink erase)",
    statements: &[
        // One row per order an erasure covered: who asked and when, what was removed; never
        // the personal data itself (what the request named is recorded as its kind only).
        "CREATE TABLE IF NOT EXISTS erasures (
            shop_id String,
            order_no UInt64,
            requested_by String,
            request String,
            erased_at DateTime('UTC'),
            contact_rows UInt64,
            messages UInt64
        ) ENGINE = MergeTree() ORDER BY (shop_id, erased_at)",
    ],
    added_columns: &[],
}];

/// The table that records applied migrations.
pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32, name String, applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree() ORDER BY version";

impl Migration {
    /// The statements with shared column lists filled in.
    pub fn statements(&self) -> Vec<String> {
        self.statements.iter().map(|s| s.replace("{columns}", ORDER_COLUMNS)).collect()
    }
}

/// Every statement the sink runs at start, as one SQL script (`sink schema`): the migrations
/// table, then each migration in order. Statements are unqualified: they run in the pipeline's
/// database. For review, for a DBA who creates the tables ahead, and for the test that runs
/// docs/security.md's GRANTs on current ClickHouse against exactly these statements.
pub fn schema_script() -> String {
    let mut out = format!("-- Run in the pipeline's database (clickhouse.database).\n\n{MIGRATIONS_TABLE};\n");
    for m in MIGRATIONS {
        out.push_str(&format!("\n-- migration {}: {}\n", m.version, m.name));
        if !m.added_columns.is_empty() {
            out.push_str(
                "-- (on ClickHouse 18.16, which lacks IF NOT EXISTS here, the sink adds what system.columns lacks)\n",
            );
        }
        for (table, column, ty) in m.added_columns {
            out.push_str(&format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {ty};\n"));
        }
        for s in m.statements() {
            out.push_str(&s);
            out.push_str(";\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_script_holds_every_statement_once_each_ending_its_line() {
        let script = schema_script();
        let all: Vec<String> = std::iter::once(MIGRATIONS_TABLE.to_owned())
            .chain(MIGRATIONS.iter().flat_map(|m| {
                let added = m
                    .added_columns
                    .iter()
                    .map(|(t, c, ty)| format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {ty}"));
                added.chain(m.statements()).collect::<Vec<_>>()
            }))
            .collect();
        for s in &all {
            assert_eq!(script.matches(&format!("{s};\n")).count(), 1, "{s}");
        }
        // Statements are told apart by `;` at the end of a line: none may hold one inside.
        assert_eq!(script.matches(";\n").count(), all.len());
    }

    /// A table created fresh (migration 1 with today's columns) and one upgraded (old columns,
    /// then migration 4's) have their columns in the same order: RowBinary is positional.
    #[test]
    fn added_columns_end_the_column_list_in_order() {
        let names: Vec<&str> = ORDER_COLUMNS.lines().filter_map(|c| c.split_whitespace().next()).collect();
        let added: Vec<(&str, &str)> =
            MIGRATIONS[3].added_columns.iter().filter(|(t, _, _)| *t == "orders").map(|(_, c, ty)| (*c, *ty)).collect();
        let versions: Vec<(&str, &str)> = MIGRATIONS[3]
            .added_columns
            .iter()
            .filter(|(t, _, _)| *t == "order_versions")
            .map(|(_, c, ty)| (*c, *ty))
            .collect();
        assert_eq!(added, versions, "both tables get the same columns");
        let tail: Vec<&str> = added.iter().map(|(c, _)| *c).collect();
        assert_eq!(&names[names.len() - tail.len()..], tail.as_slice());
        for (c, ty) in added {
            assert!(ORDER_COLUMNS.contains(&format!("{c} {ty}")), "{c} {ty}");
        }
    }

    #[test]
    fn migrations_are_ordered_and_idempotent() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last);
            last = m.version;
            for s in m.statements() {
                // An INSERT is idempotent by the target's ReplacingMergeTree (same key, same version).
                let copy = s.starts_with("INSERT INTO ") && s.contains(" SELECT ");
                assert!(s.contains("IF NOT EXISTS") || s.contains("IF EXISTS") || copy, "{s}");
                assert!(!s.contains("{columns}"));
                for banned in ["DateTime64", "Map(", " TTL ", "CODEC", "LowCardinality"] {
                    assert!(!s.contains(banned), "{banned} does not exist on ClickHouse 18.16: {s}");
                }
            }
        }
    }
}
