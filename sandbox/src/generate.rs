//! A seeded, deterministic generator of shops and orders: the same seed and the same `now` give
//! the same world, byte for byte, on every machine (a hand-written SplitMix64, so no crate
//! upgrade can change the sequence).

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;

use crate::model::{Order, Shop};

#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const SURNAMES: &[(&str, &str)] = &[
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("吉田", "ヨシダ"),
    ("山田", "ヤマダ"),
    ("佐々木", "ササキ"),
    ("松本", "マツモト"),
];

const GIVEN_NAMES: &[(&str, &str)] = &[
    ("花子", "ハナコ"),
    ("太郎", "タロウ"),
    ("一郎", "イチロウ"),
    ("美咲", "ミサキ"),
    ("翔太", "ショウタ"),
    ("陽菜", "ヒナ"),
    ("蓮", "レン"),
    ("結衣", "ユイ"),
    ("大翔", "ヒロト"),
    ("さくら", "サクラ"),
    ("健", "ケン"),
    ("由美", "ユミ"),
];

/// (prefecture and city, zip code).
const PLACES: &[(&str, &str)] = &[
    ("東京都渋谷区", "150-0002"),
    ("東京都世田谷区", "154-0004"),
    ("大阪府大阪市北区", "530-0001"),
    ("北海道札幌市中央区", "060-0001"),
    ("福岡県福岡市博多区", "812-0011"),
    ("愛知県名古屋市中区", "460-0008"),
    ("京都府京都市下京区", "600-8216"),
    ("神奈川県横浜市西区", "220-0011"),
    ("宮城県仙台市青葉区", "980-0021"),
    ("広島県広島市中区", "730-0011"),
];

const TOWNS: &[&str] = &["見本町", "試験通", "例丘", "模擬台", "仮名坂"];

/// (item code, seller code, title, unit price, options as (text, code, surcharge per unit)).
/// A paid option's text carries its surcharge, as on Qoo10 (`サイズ:二段(+800円)`).
#[allow(clippy::type_complexity)]
const ITEMS: &[(&str, &str, &str, i64, &[(&str, &str, i64)])] = &[
    (
        "1000000555",
        "TEA-GRN-100",
        "緑茶 ティーバッグ 100包",
        1280,
        &[("容量:100包", "TEA-GRN-100-L", 0), ("容量:50包", "TEA-GRN-100-S", 0)],
    ),
    (
        "1000000777",
        "CUP-YUNOMI",
        "湯呑み 有田焼",
        2980,
        &[("色:藍 / サイズ:大(+300円)", "", 300), ("色:白 / サイズ:小", "", 0)],
    ),
    ("1000000888", "SOAP-YUZU", "柚子石鹸 3個セット", 990, &[]),
    (
        "1000001001",
        "TOWEL-IMA",
        "今治タオル フェイスタオル",
        1650,
        &[
            ("カラー:ホワイト", "TOWEL-IMA-W", 0),
            ("カラー:ネイビー", "TOWEL-IMA-N", 0),
            ("名入れ刺繍(+699円)", "TOWEL-IMA-E", 699),
        ],
    ),
    (
        "1000001002",
        "SOCKS-5P",
        "靴下 5足組 綿混",
        1100,
        &[("サイズ:M", "SOCKS-5P-M", 0), ("サイズ:L", "SOCKS-5P-L", 0)],
    ),
    ("1000001003", "RICE-KOSHI-5", "新潟県産コシヒカリ 5kg", 3480, &[]),
    ("1000001004", "BENTO-BOX", "曲げわっぱ 弁当箱", 4200, &[("サイズ:一段", "", 0), ("サイズ:二段(+800円)", "", 800)]),
    ("1000001005", "CHOPS-5", "若狭塗 箸 5膳セット", 2750, &[]),
    (
        "1000001006",
        "MASK-50",
        "不織布マスク 50枚入",
        598,
        &[("カラー:ホワイト", "MASK-50-W", 0), ("カラー:ピンク", "MASK-50-P", 0)],
    ),
    ("1000001007", "SERUM-VC", "ビタミンC 美容液 30ml", 3300, &[]),
];

const CARRIERS: &[&str] = &["ヤマト運輸", "佐川急便", "日本郵便"];
const PAYMENTS: &[&str] = &["クレジットカード", "コンビニ決済", "Qoo10キャッシュ", "PayPay"];

/// Shop `i` (1-based) of the sandbox, with its credentials.
pub fn shop(i: u32) -> Shop {
    Shop {
        id: format!("sandbox-{i}"),
        user_id: format!("sandbox-seller-{i}"),
        api_key: format!("sandbox-api-key-{i}"),
        password: format!("sandbox-password-{i}"),
        denied_methods: Vec::new(),
    }
}

/// About `count` order lines for `shop` (1-based index `shop_index`), placed over the `days`
/// before `now` (JST), in packs of one to three lines. Older orders are further along their
/// life cycle; a few carry claims (a partial refund among them), 2 % of carts are made to order
/// with a 30-day lead time, some lines have paid options and some carts a cart discount.
pub fn orders(seed: u64, shop_index: u32, shop_id: &str, count: usize, days: i64, now: NaiveDateTime) -> Vec<Order> {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(u64::from(shop_index)));
    let mut out = Vec::with_capacity(count);
    let base_order = 1_000_000_000 + u64::from(shop_index) * 10_000_000;
    let base_pack = 800_000_000 + u64::from(shop_index) * 10_000_000;
    let span_minutes = (days * 24 * 60).max(1) as u64;
    let mut pack_seq = 0;
    // The draws happen in a fixed order (cart, then its lines): the same seed is the same world.
    while out.len() < count {
        pack_seq += 1;
        let lines = match rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        }
        .min(count - out.len());
        let cart = Cart::draw(&mut rng, base_pack + pack_seq, now, span_minutes);
        for line in 0..lines {
            let order_no = base_order + out.len() as u64 + 1;
            out.push(cart.line(&mut rng, shop_id, order_no, line, now));
        }
    }
    out
}

/// What the lines of one cart share: dates, status, claim, buyer and address.
struct Cart {
    pack_no: u64,
    order_date: NaiveDateTime,
    status: u8,
    lead_days: u32,
    cart_discount_seller: Decimal,
    cart_discount_qoo10: Decimal,
    name: (String, String),
    zip: &'static str,
    place: &'static str,
    addr2: String,
    payment_method: &'static str,
    carrier: &'static str,
    paid: Option<NaiveDateTime>,
    est: Option<NaiveDate>,
    shipped: Option<NaiveDateTime>,
    delivered: Option<NaiveDateTime>,
    claim_status: u8,
}

impl Cart {
    fn draw(rng: &mut Rng, pack_no: u64, now: NaiveDateTime, span_minutes: u64) -> Cart {
        let order_date = now - Duration::minutes(rng.below(span_minutes) as i64 + 1);
        let age_hours = (now - order_date).num_hours();
        let lead_days: u32 = if rng.chance(2) { 30 } else { 0 };
        let mut status: u8 = if age_hours < 24 {
            *rng.pick(&[1, 2, 2, 2])
        } else if age_hours < 72 {
            *rng.pick(&[2, 3, 3, 4])
        } else {
            *rng.pick(&[3, 4, 5, 5])
        };
        if lead_days > 0 && (24..24 * 31).contains(&age_hours) {
            status = 3; // still being made
        }
        let cart_discount_seller = if rng.chance(10) { Decimal::from(*rng.pick(&[100, 300])) } else { Decimal::ZERO };
        let cart_discount_qoo10 = if rng.chance(5) { Decimal::from(200) } else { Decimal::ZERO };
        let (sur, sur_kana) = *rng.pick(SURNAMES);
        let (given, given_kana) = *rng.pick(GIVEN_NAMES);
        let (place, zip) = *rng.pick(PLACES);
        let town = *rng.pick(TOWNS);
        let addr2 = format!("{town}{}-{}-{}", 1 + rng.below(9), 1 + rng.below(20), 1 + rng.below(30));
        let payment_method = *rng.pick(PAYMENTS);
        let carrier = *rng.pick(CARRIERS);
        let paid = (status >= 2).then(|| order_date + Duration::minutes(1 + rng.below(30) as i64));
        let est = (status >= 3).then(|| {
            let days = if lead_days > 0 { i64::from(lead_days) } else { 2 + rng.below(3) as i64 };
            (order_date + Duration::days(days)).date()
        });
        let shipped = (status >= 4).then(|| order_date + Duration::hours(30 + rng.below(24) as i64));
        let delivered = (status >= 5).then(|| order_date + Duration::hours(60 + rng.below(24) as i64));
        let claim_status = if rng.chance(6) { claim_for(rng, status) } else { 0 };
        let name = (format!("{sur} {given}"), format!("{sur_kana} {given_kana}"));
        Cart {
            pack_no,
            order_date,
            status,
            lead_days,
            cart_discount_seller,
            cart_discount_qoo10,
            name,
            zip,
            place,
            addr2,
            payment_method,
            carrier,
            paid,
            est,
            shipped,
            delivered,
            claim_status,
        }
    }

    /// Line `line` (0-based) of the cart: its item, quantity, price and tracking number.
    fn line(&self, rng: &mut Rng, shop_id: &str, order_no: u64, line: usize, now: NaiveDateTime) -> Order {
        let (item_code, seller_code, title, price, options) = *rng.pick(ITEMS);
        let (option, option_code, surcharge) = if options.is_empty() { ("", "", 0) } else { *rng.pick(options) };
        let quantity = 1 + (rng.below(10) / 7) as u32 + u32::from(rng.chance(5)) * 2;
        let unit_price = Decimal::from(price);
        let discount = if rng.chance(20) {
            (unit_price * Decimal::from(quantity) / Decimal::from(10)).floor()
        } else {
            Decimal::ZERO
        };
        let shipping_rate = if line == 0 && price < 2000 { Decimal::from(600) } else { Decimal::ZERO };
        let (n, claim_status, shipped) = (self.pack_no % 10_000, self.claim_status, self.status >= 4);
        let tracking_no =
            if shipped { format!("{:04}-{:04}-{:04}", n, order_no % 10_000, rng.below(10_000)) } else { String::new() };
        Order {
            shop: shop_id.to_owned(),
            order_no,
            pack_no: self.pack_no,
            status: self.status,
            claim_status,
            order_date: self.order_date,
            payment_date: self.paid,
            est_ship_date: self.est,
            available_ship_date: self.paid.map(|p| (p + Duration::days(i64::from(self.lead_days.max(2)))).date()),
            lead_days: self.lead_days,
            shipping_date: self.shipped,
            delivered_date: self.delivered,
            claim_request_date: (claim_status != 0).then(|| now - Duration::hours(2)),
            claim_done_date: matches!(claim_status, 3 | 6 | 15 | 16).then(|| now - Duration::hours(1)),
            claim_reason: if claim_status != 0 { "お客様都合".into() } else { String::new() },
            buyer: self.name.0.clone(),
            buyer_kana: self.name.1.clone(),
            buyer_tel: String::new(),
            buyer_mobile: format!("+81-90-0000-{n:04}"),
            buyer_email: format!("buyer{}@example.invalid", self.pack_no),
            receiver: self.name.0.clone(),
            receiver_kana: self.name.1.clone(),
            receiver_tel: String::new(),
            receiver_mobile: format!("+81-90-0000-{n:04}"),
            zip_code: self.zip.into(),
            addr1: self.place.into(),
            addr2: self.addr2.clone(),
            item_code: item_code.into(),
            seller_item_code: seller_code.into(),
            item_title: title.into(),
            option: option.into(),
            option_code: option_code.into(),
            unit_price,
            option_price: Decimal::from(surcharge),
            quantity,
            discount,
            shipping_rate,
            cart_discount_seller: self.cart_discount_seller,
            cart_discount_qoo10: self.cart_discount_qoo10,
            refund_quantity: u32::from(claim_status == 15),
            refund_amount: if claim_status == 15 { unit_price } else { Decimal::ZERO },
            payment_method: self.payment_method.into(),
            carrier: if shipped { self.carrier.into() } else { String::new() },
            tracking_no,
            message: if rng.chance(15) { "置き配希望".into() } else { String::new() },
            numbers_as_strings: rng.chance(10),
            hold: false,
        }
    }
}

/// A claim that fits the cart's status: cancel before shipping, return or refund after.
fn claim_for(rng: &mut Rng, status: u8) -> u8 {
    match status {
        1 => 16,
        2 | 3 => *rng.pick(&[1, 3]),
        4 => 1,
        _ => *rng.pick(&[4, 6, 15]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2026-11-29 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn same_seed_same_world() {
        assert_eq!(orders(7, 1, "s", 200, 10, now()), orders(7, 1, "s", 200, 10, now()));
        assert_ne!(orders(7, 1, "s", 50, 10, now()), orders(8, 1, "s", 50, 10, now()));
    }

    #[test]
    fn world_has_every_status_packs_and_claims() {
        let o = orders(1, 1, "s", 500, 10, now());
        assert_eq!(o.len(), 500);
        for s in 1..=5 {
            assert!(o.iter().any(|x| x.status == s), "status {s}");
        }
        assert!(o.iter().any(|x| x.claim_status != 0));
        assert!(o.iter().any(|x| x.claim_status == 15 && x.refund_quantity == 1), "a partial refund");
        assert!(o.iter().any(|x| !x.option_price.is_zero() && x.option.contains("円)")), "paid options");
        assert!(o.iter().any(|x| !x.cart_discount_seller.is_zero()), "cart discounts");
        assert!(o.iter().any(|x| x.lead_days == 30 && x.status == 3), "made to order, for weeks");
        assert!(o.iter().any(|x| x.available_ship_date.is_some() && x.available_ship_date != x.est_ship_date));
        assert!(o.iter().any(|x| o.iter().filter(|y| y.pack_no == x.pack_no).count() > 1));
        assert!(o.iter().all(|x| x.order_date < now()));
        let mut nos: Vec<u64> = o.iter().map(|x| x.order_no).collect();
        nos.dedup();
        assert_eq!(nos.len(), 500, "order numbers are unique");
    }
}
