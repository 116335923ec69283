//! The canonical fields a row can feed, as slot numbers, and which QAPI key feeds which.

pub const ORDER_NO: usize = 0;
pub const PACK_NO: usize = 1;
pub const SHIPPING_STATUS: usize = 2;
pub const CLAIM_STATUS: usize = 3;
pub const ORDER_DATE: usize = 4;
pub const PAYMENT_DATE: usize = 5;
pub const EST_SHIPPING_DATE: usize = 6;
pub const SHIPPING_DATE: usize = 7;
pub const DELIVERED_DATE: usize = 8;
pub const ITEM_CODE: usize = 9;
pub const SELLER_ITEM_CODE: usize = 10;
pub const ITEM_TITLE: usize = 11;
pub const OPTION: usize = 12;
pub const OPTION_CODE: usize = 13;
pub const ORDER_QTY: usize = 14;
pub const ORDER_PRICE: usize = 15;
pub const DISCOUNT: usize = 16;
pub const TOTAL: usize = 17;
pub const PAYMENT_AMOUNT: usize = 18;
pub const SETTLE_PRICE: usize = 19;
pub const SHIPPING_RATE: usize = 20;
pub const CURRENCY: usize = 21;
pub const DELIVERY_COMPANY: usize = 22;
pub const TRACKING_NO: usize = 23;
pub const PAYMENT_METHOD: usize = 24;
pub const BUYER: usize = 25;
pub const BUYER_KANA: usize = 26;
pub const BUYER_TEL: usize = 27;
pub const BUYER_MOBILE: usize = 28;
pub const BUYER_EMAIL: usize = 29;
pub const RECEIVER: usize = 30;
pub const RECEIVER_KANA: usize = 31;
pub const RECEIVER_TEL: usize = 32;
pub const RECEIVER_MOBILE: usize = 33;
pub const ZIP_CODE: usize = 34;
pub const ADDRESS: usize = 35;
pub const ADDRESS1: usize = 36;
pub const ADDRESS2: usize = 37;
pub const COUNTRY: usize = 38;
pub const SELLER_DISCOUNT: usize = 39;
pub const CART_DISCOUNT_SELLER: usize = 40;
pub const CART_DISCOUNT_QOO10: usize = 41;
pub const REFUND_COUNT: usize = 42;
pub const REFUND_BALANCE: usize = 43;
pub const AVAILABLE_DATE: usize = 44;
pub const AVAILABLE_SEND_TYPE: usize = 45;
pub const COUNT: usize = 46;

/// What a key (lower-cased) is: a slot, a key QAPI is known to send that we do not use, or
/// unknown. The list covers v2, v3, claim rows and the single-order API.
pub(super) enum Class {
    Slot(usize),
    Known,
    Unknown,
}

pub(super) fn classify(lower: &str) -> Class {
    Class::Slot(match lower {
        "orderno" => ORDER_NO,
        "packno" => PACK_NO,
        "shippingstatus" => SHIPPING_STATUS,
        "claimstatus" => CLAIM_STATUS,
        "orderdate" => ORDER_DATE,
        "paymentdate" => PAYMENT_DATE,
        "estshippingdate" | "estimatedshippingdate" => EST_SHIPPING_DATE,
        "shippingdate" => SHIPPING_DATE,
        "delivereddate" => DELIVERED_DATE,
        "itemcode" | "itemno" => ITEM_CODE,
        "selleritemcode" => SELLER_ITEM_CODE,
        "itemtitle" => ITEM_TITLE,
        "option" => OPTION,
        "optioncode" => OPTION_CODE,
        "orderqty" => ORDER_QTY,
        "orderprice" => ORDER_PRICE,
        "discount" => DISCOUNT,
        "total" => TOTAL,
        "paymentamount" => PAYMENT_AMOUNT,
        "settleprice" => SETTLE_PRICE,
        "shippingrate" => SHIPPING_RATE,
        "currency" => CURRENCY,
        "deliverycompany" => DELIVERY_COMPANY,
        "trackingno" => TRACKING_NO,
        "paymentmethod" => PAYMENT_METHOD,
        "buyer" => BUYER,
        "buyer_gata" | "buyerkana" => BUYER_KANA,
        "buyertel" => BUYER_TEL,
        "buyermobile" => BUYER_MOBILE,
        "buyeremail" => BUYER_EMAIL,
        "receiver" => RECEIVER,
        "receiver_gata" | "receiverkana" => RECEIVER_KANA,
        "receivertel" => RECEIVER_TEL,
        "receivermobile" => RECEIVER_MOBILE,
        "zipcode" => ZIP_CODE,
        "shippingaddr" | "shippingaddress" => ADDRESS,
        "addr1" | "address1" => ADDRESS1,
        "addr2" | "address2" => ADDRESS2,
        "shippingcountry" => COUNTRY,
        "sellerdiscount" => SELLER_DISCOUNT,
        "cart_discount_seller" | "cartdiscountseller" => CART_DISCOUNT_SELLER,
        "cart_discount_qoo10" | "cartdiscountqoo10" => CART_DISCOUNT_QOO10,
        "nrpartrefundcnt" => REFUND_COUNT,
        "nrpartrefundbalance" => REFUND_BALANCE,
        "availableshippingdate" => AVAILABLE_DATE,
        "availablesendtype" => AVAILABLE_SEND_TYPE,
        "sellerid"
        | "hopedate"
        | "desireddeliverydate"
        | "sendername"
        | "sendertel"
        | "sendernation"
        | "senderzipcode"
        | "senderaddr"
        | "senderaddress"
        | "shippingway"
        | "shippingmsg"
        | "shippingmessage"
        | "relatedorder"
        | "shippingratetype"
        | "vouchercode"
        | "packingno"
        | "sellerdeliveryno"
        | "paymentnation"
        | "gift"
        | "cod_price"
        | "branchname"
        | "overseaconsignment"
        | "overseaconsignment_receiver"
        | "overseaconsignment_country"
        | "overseaconsignment_zipcode"
        | "overseaconsignment_addr1"
        | "overseaconsignment_addr2"
        | "ordertype"
        | "material"
        | "cancelrefunddate"
        | "reason"
        | "requestdate"
        | "deliverycompanyreturn"
        | "trackingnoreturn"
        | "pickupaddress"
        | "paymentreturnshipping"
        | "itemcondition"
        | "codcancelprice"
        | "codqrefundprice"
        | "codcancelrelatedorder"
        | "nrdutytarget"
        | "nrsoltype" => {
            return Class::Known;
        }
        _ => return Class::Unknown,
    })
}
