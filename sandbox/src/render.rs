//! Order lines rendered the way QAPI renders them: v2 (mixed casing), v3 (PascalCase) and claim
//! rows, with Qoo10's empty strings for "not yet" and its `Label(n)` statuses.

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Map, Value, json};

use crate::model::Order;

fn time(t: Option<NaiveDateTime>) -> Value {
    Value::String(t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default())
}

fn date_v2(d: Option<NaiveDate>) -> Value {
    Value::String(d.map(|d| d.format("%Y-%m-%d 00:00:00").to_string()).unwrap_or_default())
}

fn date_v3(d: Option<NaiveDate>) -> Value {
    Value::String(d.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default())
}

fn money(o: &Order, d: Decimal) -> Value {
    if o.numbers_as_strings {
        return Value::String(format!("{:.4}", d));
    }
    if d.fract().is_zero()
        && let Some(i) = d.to_i64()
    {
        return json!(i);
    }
    json!(d.to_f64().unwrap_or(0.0))
}

fn qty(o: &Order) -> Value {
    if o.numbers_as_strings { Value::String(o.quantity.to_string()) } else { json!(o.quantity) }
}

/// Every order number of the cart, the row's own included, separated by ", " (the reference,
/// §11.2): a reader must group lines by `packNo`, not trust this list.
fn related(siblings: &[u64]) -> String {
    siblings.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn shipping_rate_type(o: &Order) -> &'static str {
    if o.shipping_rate.is_zero() { "Free" } else { "Charge" }
}

/// A `GetShippingInfo_v2` row. `siblings` are the order numbers of the same pack.
pub fn v2_row(o: &Order, seller: &str, siblings: &[u64]) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("orderNo", json!(o.order_no));
    put("packNo", json!(o.pack_no));
    put("shippingStatus", json!(schemas::status::shipping_label(o.status)));
    put("sellerID", json!(seller));
    put("orderDate", time(Some(o.order_date)));
    put("PaymentDate", time(o.payment_date));
    put("EstShippingDate", date_v2(o.est_ship_date));
    put("ShippingDate", time(o.shipping_date));
    put("DeliveredDate", time(o.delivered_date));
    put("buyer", json!(o.buyer));
    put("buyer_gata", json!(o.buyer_kana));
    put("buyerTel", json!(o.buyer_tel));
    put("buyerMobile", json!(o.buyer_mobile));
    put("buyerEmail", json!(o.buyer_email));
    put("itemCode", json!(o.item_code));
    put("sellerItemCode", json!(o.seller_item_code));
    put("itemTitle", json!(o.item_title));
    put("option", json!(o.option));
    put("optionCode", json!(o.option_code));
    put("orderPrice", money(o, o.unit_price));
    put("orderQty", qty(o));
    put("discount", money(o, o.discount));
    put("total", money(o, o.total()));
    put("receiver", json!(o.receiver));
    put("receiver_gata", json!(o.receiver_kana));
    put("shippingCountry", json!("JP"));
    put("zipCode", json!(o.zip_code));
    put("shippingAddr", json!(format!("{} {}", o.addr1, o.addr2)));
    put("Addr1", json!(o.addr1));
    put("Addr2", json!(o.addr2));
    put("receiverTel", json!(o.receiver_tel));
    put("receiverMobile", json!(o.receiver_mobile));
    put("hopeDate", json!(""));
    put("ShippingMsg", json!(o.message));
    put("PaymentMethod", json!(o.payment_method));
    put("SellerDiscount", json!(0));
    put("Currency", json!("JPY"));
    put("ShippingRate", money(o, o.shipping_rate));
    put("RelatedOrder", json!(related(siblings)));
    put("shippingRateType", json!(shipping_rate_type(o)));
    put("DeliveryCompany", json!(o.carrier));
    put("TrackingNo", json!(o.tracking_no));
    put("PackingNo", json!(""));
    put("SellerDeliveryNo", json!(""));
    put("PaymentNation", json!("JP"));
    put("Gift", json!(""));
    put("cod_price", json!(0));
    put("Cart_Discount_Seller", money(o, o.cart_discount_seller));
    put("Cart_Discount_Qoo10", money(o, o.cart_discount_qoo10));
    put("SettlePrice", money(o, o.settle_price()));
    put("OverseaConsignment", json!("N"));
    Value::Object(m)
}

/// A `GetShippingInfo_v3` row (PascalCase, renamed fields, `AvailableSendType`).
pub fn v3_row(o: &Order, seller: &str, siblings: &[u64]) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("ShippingStatus", json!(schemas::status::shipping_label(o.status)));
    put("SellerID", json!(seller));
    put("PackNo", json!(o.pack_no));
    put("OrderNo", json!(o.order_no));
    put("OrderDate", time(Some(o.order_date)));
    put("PaymentDate", time(o.payment_date));
    put("EstimatedShippingDate", date_v3(o.est_ship_date));
    put("ShippingDate", time(o.shipping_date));
    put("DeliveredDate", time(o.delivered_date));
    put("Buyer", json!(o.buyer));
    put("BuyerKana", json!(o.buyer_kana));
    put("BuyerTel", json!(o.buyer_tel));
    put("BuyerMobile", json!(o.buyer_mobile));
    put("BuyerEmail", json!(o.buyer_email));
    put("ItemNo", json!(o.item_code));
    put("SellerItemCode", json!(o.seller_item_code));
    put("ItemTitle", json!(o.item_title));
    put("Option", json!(o.option));
    put("OptionCode", json!(o.option_code));
    put("OrderPrice", money(o, o.unit_price));
    put("OrderQty", qty(o));
    put("Discount", money(o, o.discount));
    put("Total", money(o, o.total()));
    put("Receiver", json!(o.receiver));
    put("ReceiverKana", json!(o.receiver_kana));
    put("ZipCode", json!(o.zip_code));
    put("ShippingAddress", json!(format!("{} {}", o.addr1, o.addr2)));
    put("Address1", json!(o.addr1));
    put("Address2", json!(o.addr2));
    put("ReceiverTel", json!(o.receiver_tel));
    put("ReceiverMobile", json!(o.receiver_mobile));
    put("DesiredDeliveryDate", json!(""));
    put("ShippingMessage", json!(o.message));
    put("PaymentMethod", json!(o.payment_method));
    put("SellerDiscount", json!(0));
    put("Currency", json!("JPY"));
    put("ShippingRate", money(o, o.shipping_rate));
    put("RelatedOrder", json!(related(siblings)));
    put("ShippingRateType", json!(shipping_rate_type(o)));
    put("DeliveryCompany", json!(o.carrier));
    put("VoucherCode", json!(""));
    put("PackingNo", json!(""));
    put("SellerDeliveryNo", json!(""));
    put("Gift", json!(""));
    put("CartDiscountSeller", money(o, o.cart_discount_seller));
    put("CartDiscountQoo10", money(o, o.cart_discount_qoo10));
    put("SettlePrice", money(o, o.settle_price()));
    put("BranchName", json!(""));
    put("TrackingNo", json!(o.tracking_no));
    put("AvailableSendType", json!(o.available_send_type().to_string()));
    put("AvailableShippingDate", date_v3(o.available_ship_date));
    Value::Object(m)
}

/// A `GetClaimInfo_V3` row (claim codes arrive as strings).
/// A `GetShippingAndClaimInfoByOrderNo_V2` row: shipping and claim fields flattened into one,
/// with the single-order API's own casing (`deliveryCompany`, `trackingNo`, `shippingDate`)
/// and fewer fields (no addresses, no settlement).
pub fn single_order_row(o: &Order) -> Value {
    let mut row = claim_row(o);
    let m = row.as_object_mut().expect("an object");
    m.insert("shippingStatus".into(), json!(schemas::status::shipping_label(o.status)));
    m.insert("EstShippingDate".into(), date_v2(o.est_ship_date));
    for k in ["receiver", "receiverTel", "receiverMobile", "buyerTel", "buyerMobile"] {
        m.remove(k);
    }
    row
}

pub fn claim_row(o: &Order) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("claimStatus", json!(o.claim_status.to_string()));
    put("cancelRefundDate", time(o.claim_done_date));
    put("reason", json!(o.claim_reason));
    put("requestDate", time(o.claim_request_date));
    put("orderDate", time(Some(o.order_date)));
    put("PaymentDate", time(o.payment_date));
    put("shippingDate", time(o.shipping_date));
    put("DeliveredDate", time(o.delivered_date));
    put("orderNo", json!(o.order_no));
    put("packNo", json!(o.pack_no));
    put("itemCode", json!(o.item_code));
    put("sellerItemCode", json!(o.seller_item_code));
    put("itemTitle", json!(o.item_title));
    put("orderQty", qty(o));
    put("paymentNation", json!("JP"));
    put("currency", json!("JPY"));
    put("paymentAmount", money(o, o.total()));
    put("deliveryCompany", json!(o.carrier));
    put("trackingNo", json!(o.tracking_no));
    put("receiver", json!(o.receiver));
    put("receiverTel", json!(o.receiver_tel));
    put("receiverMobile", json!(o.receiver_mobile));
    put("buyer", json!(o.buyer));
    put("buyerTel", json!(o.buyer_tel));
    put("buyerMobile", json!(o.buyer_mobile));
    put("nrPartRefundCnt", json!(o.refund_quantity));
    put("nrPartRefundBalance", money(o, o.refund_amount));
    Value::Object(m)
}
