//! Raw Qoo10 row → canonical order. Pure: no IO, no clock.
//!
//! One tolerant reader serves every row shape (v2, v3, claim rows): keys match without case, and
//! each canonical field lists the names Qoo10 uses for it. Numbers may be JSON numbers or strings
//! (`"1980.0000"`); empty strings mean "not yet". Anything required that is missing or
//! unparsable is an error naming the field, the value and what was expected: the caller turns it
//! into a dead letter, never into a guess.
//!
//! The hot path makes one pass over the row: each key is classified into a field slot (no
//! allocation), values stay borrowed JSON text until a field is read, and money is parsed from
//! that text straight into a decimal (never through a float).

use rust_decimal::Decimal;
use schemas::order::{Anomaly, CanonicalOrder, ORDER_SCHEMA_VERSION, Personal, Provenance, version_of};
use schemas::raw::{RawEnvelope, RowKind};
use schemas::status::{Status, StatusMap, parse_status_label};
use serde_json::value::RawValue;

use row::{Row, err, is_string, quantity, scalar_text, shown, small_number};

mod row;
mod slot;
#[cfg(test)]
mod tests;

/// Why a row cannot become a canonical order: the field, its value, what was expected.
pub type NormalizeError = schemas::dlq::FieldError;

/// Turns one raw envelope (and its stream sequence) into a canonical order.
pub fn normalize<R: std::ops::Deref<Target = RawValue>>(
    env: &RawEnvelope<R>,
    raw_seq: u64,
    statuses: &StatusMap,
) -> Result<CanonicalOrder, NormalizeError> {
    use slot::*;
    let row: Row<'_> =
        serde_json::from_str(env.row.get()).map_err(|e| err("row", format!("is not a JSON object: {e}")))?;

    let order_no = row.required_u64(ORDER_NO, "orderNo")?;
    let pack_no = row.required_u64(PACK_NO, "packNo")?;
    let ordered_at = row.instant(ORDER_DATE)?.ok_or_else(|| err("orderDate", "missing or empty"))?;

    let Standing { status, qoo10_status, claim_status, label } = standing(env.kind, &row, statuses)?;
    let quantity = quantity(&row)?;

    let is_claim = env.kind == RowKind::Claim;
    let personal = (!is_claim).then(|| personal(&row));
    let total = match row.decimal(TOTAL)? {
        Some(t) => Some(t),
        None => row.decimal(PAYMENT_AMOUNT)?,
    };
    let (order_price, discount) = (row.decimal(ORDER_PRICE)?, row.decimal(DISCOUNT)?);
    // Only a partial refund (claim 15) says how much was refunded.
    let partial = claim_status == 15;
    let refund_quantity = if partial { small_number(&row, REFUND_COUNT)? } else { None };
    let refund_amount = if partial { row.decimal(REFUND_BALANCE)? } else { None };
    let surcharge = if is_claim { None } else { option_price(order_price, quantity, discount, total) };
    if let Err(e) = schemas::order::check_money("option_price", surcharge) {
        let problem = format!("{} (total + discount − orderPrice × orderQty)", e.problem);
        return Err(err("option_price", problem));
    }

    let mut order = CanonicalOrder {
        schema_version: ORDER_SCHEMA_VERSION,
        shop_id: env.shop.clone(),
        order_no,
        pack_no,
        status,
        qoo10_status,
        claim_status,
        item_code: row.text(ITEM_CODE),
        seller_item_code: row.text(SELLER_ITEM_CODE),
        item_title: row.text(ITEM_TITLE),
        option_text: row.opt_text(OPTION),
        option_code: row.opt_text(OPTION_CODE),
        quantity,
        order_price,
        discount,
        total,
        settle_price: row.decimal(SETTLE_PRICE)?,
        shipping_rate: row.decimal(SHIPPING_RATE)?,
        currency: row.text(CURRENCY),
        ordered_at,
        paid_at: row.instant(PAYMENT_DATE)?,
        estimated_ship_date: if is_claim { None } else { row.date(EST_SHIPPING_DATE)? },
        shipped_at: row.instant(SHIPPING_DATE)?,
        delivered_at: row.instant(DELIVERED_DATE)?,
        carrier: row.text(DELIVERY_COMPANY),
        tracking_no: row.text(TRACKING_NO),
        payment_method: row.opt_text(PAYMENT_METHOD),
        option_price: surcharge,
        seller_discount: row.decimal(SELLER_DISCOUNT)?,
        cart_discount_seller: row.decimal(CART_DISCOUNT_SELLER)?,
        cart_discount_qoo10: row.decimal(CART_DISCOUNT_QOO10)?,
        refund_quantity,
        refund_amount,
        available_ship_date: row.date(AVAILABLE_DATE)?,
        available_send_type: small_number(&row, AVAILABLE_SEND_TYPE)?.map(|n| n.min(255) as u8),
        first_import: env.first_import,
        new_in_known_cart: env.new_in_known_cart,
        version: version_of(env.fetched_at),
        source: Provenance {
            kind: env.kind,
            method: env.method.clone(),
            fetched_at: env.fetched_at,
            raw_seq,
            qoo10_label: label,
            unknown_keys: row.unknown,
        },
        personal,
        anomalies: Vec::new(),
        cart_claims: if is_claim { env.cart_claims.clone() } else { Vec::new() },
    };
    order.anomalies = anomalies(&order);
    Ok(order)
}

/// Where a row stands: Qoo10's codes, their canonical status, Qoo10's own label.
struct Standing {
    status: Status,
    qoo10_status: u8,
    claim_status: u8,
    label: String,
}

fn standing(kind: RowKind, row: &Row<'_>, statuses: &StatusMap) -> Result<Standing, NormalizeError> {
    use slot::*;
    let claim_status = claim_code(row)?;
    let (qoo10_status, label) = match (kind, row.get(SHIPPING_STATUS)) {
        (RowKind::Claim, _) => (0, claim_status.to_string()),
        (RowKind::Order, None) => return Err(err("shippingStatus", "missing")),
        (RowKind::Order, Some((key, v))) => {
            let text = scalar_text(v).ok_or_else(|| err(key, format!("value {} is not a status label", shown(v))))?;
            let code = parse_status_label(&text)
                .ok_or_else(|| err(key, format!("value {} is not a status label like \"On request(2)\"", shown(v))))?;
            (code, text.into_owned())
        }
    };
    if kind == RowKind::Claim && claim_status == 0 {
        return Err(err("claimStatus", "missing on a claim row"));
    }
    let shipping = (qoo10_status != 0).then_some(qoo10_status);
    let status = statuses.canonical(shipping, claim_status).ok_or_else(|| {
        if claim_status != 0 {
            err("claimStatus", format!("code {claim_status} is not in the status mapping"))
        } else {
            err("shippingStatus", format!("code {qoo10_status} is not in the status mapping"))
        }
    })?;
    Ok(Standing { status, qoo10_status, claim_status, label })
}

/// The ClaimStat code; absent or blank is 0 (no claim).
fn claim_code(row: &Row<'_>) -> Result<u8, NormalizeError> {
    Ok(match row.get(slot::CLAIM_STATUS) {
        None => 0,
        Some((_, v)) if is_string(v) && scalar_text(v).is_some_and(|t| t.trim().is_empty()) => 0,
        Some((key, v)) => scalar_text(v)
            .and_then(|t| t.trim().parse::<u8>().ok())
            .ok_or_else(|| err(key, format!("value {} is not a claim code", shown(v))))?,
    })
}

/// The buyer's and the receiver's details (order rows only: claim rows do not carry them).
fn personal(row: &Row<'_>) -> Personal {
    use slot::*;
    Personal {
        buyer_name: row.text(BUYER),
        buyer_kana: row.text(BUYER_KANA),
        buyer_tel: row.text(BUYER_TEL),
        buyer_mobile: row.text(BUYER_MOBILE),
        buyer_email: row.text(BUYER_EMAIL),
        receiver_name: row.text(RECEIVER),
        receiver_kana: row.text(RECEIVER_KANA),
        receiver_tel: row.text(RECEIVER_TEL),
        receiver_mobile: row.text(RECEIVER_MOBILE),
        zip_code: row.text(ZIP_CODE),
        address: row.text(ADDRESS),
        address1: row.text(ADDRESS1),
        address2: row.text(ADDRESS2),
        country: row.text(COUNTRY),
    }
}

/// The paid-option surcharge of a line: Qoo10's `total` is item price × quantity + paid options
/// − discount, and `orderPrice` is the unit price without the options (docs/qoo10-money.md).
fn option_price(
    price: Option<Decimal>,
    quantity: u32,
    discount: Option<Decimal>,
    total: Option<Decimal>,
) -> Option<Decimal> {
    // Checked, though amounts are below 10^16 and quantities below 2^32 (at most about 4·10^25,
    // inside Decimal's 7.9·10^28): an overflow would panic the stage.
    let line = price?.checked_mul(Decimal::from(quantity))?;
    total?.checked_add(discount.unwrap_or_default())?.checked_sub(line)
}

/// Checks Qoo10's figures against each other. `total_mismatch` is for a total that no paid
/// option explains: one below `orderPrice × orderQty − discount`, or one that leaves a surcharge
/// of a fraction of a yen. The order is kept as Qoo10 sent it: flagged, never dropped or
/// corrected.
fn anomalies(o: &CanonicalOrder) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if let (Some(price), Some(total), Some(surcharge)) = (o.order_price, o.total, o.option_price)
        && (surcharge.is_sign_negative() && !surcharge.is_zero() || !surcharge.fract().is_zero())
    {
        let discount = o.discount.unwrap_or_default();
        let expected = price.checked_mul(Decimal::from(o.quantity)).and_then(|l| l.checked_sub(discount));
        let expected = expected.map_or_else(|| "(out of range)".to_owned(), |e| e.to_string());
        out.push(Anomaly {
            code: "total_mismatch".into(),
            detail: format!(
                "orderPrice {price} × orderQty {} − discount {discount} = {expected}, but total is {total}: \
                 no paid option explains a difference of {surcharge}",
                o.quantity
            ),
        });
    }
    if !o.currency.is_empty() && o.currency != "JPY" {
        out.push(Anomaly { code: "currency_not_jpy".into(), detail: format!("currency is {}", o.currency) });
    }
    out
}
